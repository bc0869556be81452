"""Image roots for tests: real ELF files compiled with gcc, and the real
loader (glibc's ld.so or musl's, run with `--list` in a chroot of the root)
as the oracle to compare slim's answers with."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HOST_MULTIARCH = "/usr/lib/x86_64-linux-gnu"
GLIBC_INTERP = "/lib64/ld-linux-x86-64.so.2"
MUSL_INTERP = "/lib/ld-musl-x86_64.so.1"
MUSL_LIBC = "/usr/lib/x86_64-linux-musl/libc.so"

_LIST_LINE = re.compile(r"^\s*(\S+)(?:\s+=>\s+(not found|\S+))?")


@dataclass
class RealLoad:
    """What the real loader printed for `--list`."""

    paths: dict[str, str | None] = field(default_factory=dict)  # name -> opened-as path
    output: str = ""
    returncode: int = 0


def compile_program(directory: Path, source: str, *flags: str) -> bytes:
    """The bytes of a C program compiled with gcc and `flags` (-static,
    -g...) in `directory`."""
    (directory / "program.c").write_text(source)
    output = directory / "program"
    subprocess.run(["gcc", *flags, "-o", str(output), str(directory / "program.c")], check=True)
    return output.read_bytes()


class ElfRoot:
    """A directory laid out as an image root, with a build dir beside it."""

    def __init__(self, base: Path) -> None:
        self.path = base / "root"
        self.build = base / "build"
        self.path.mkdir()
        self.build.mkdir()
        self._serial = 0

    # -- layout

    def host(self, in_root: str) -> Path:
        return self.path / in_root.lstrip("/")

    def mkdir(self, in_root: str) -> Path:
        target = self.host(in_root)
        target.mkdir(parents=True, exist_ok=True)
        return target

    def write(self, in_root: str, content: str | bytes, mode: int = 0o644) -> Path:
        target = self.host(in_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        target.write_bytes(content)
        target.chmod(mode)
        return target

    def symlink(self, in_root: str, target: str) -> None:
        link = self.host(in_root)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)

    def copy_in(self, host_file: str, in_root: str) -> None:
        target = self.host(in_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host_file, target)

    def glibc_base(self, *, absolute_lib64: bool = False) -> ElfRoot:
        """Merged /usr with the host's glibc: /lib -> usr/lib, /lib64 ->
        usr/lib64 (or /usr/lib64), ld.so and libc.so.6 in the multiarch dir."""
        for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
            self.copy_in(os.path.realpath(f"{HOST_MULTIARCH}/{name}"), f"{HOST_MULTIARCH}/{name}")
        self.mkdir("/usr/bin")
        self.symlink("/usr/lib64/ld-linux-x86-64.so.2", f"{HOST_MULTIARCH}/ld-linux-x86-64.so.2")
        self.symlink("/lib", "usr/lib")
        self.symlink("/bin", "usr/bin")
        self.symlink("/lib64", "/usr/lib64" if absolute_lib64 else "usr/lib64")
        self.write("/etc/ld.so.conf", "")
        return self

    def musl_base(self) -> ElfRoot:
        self.copy_in(MUSL_LIBC, MUSL_LIBC)
        self.symlink(MUSL_INTERP, MUSL_LIBC)
        return self

    # -- compiling

    def _compile(self, args: list[str]) -> None:
        result = subprocess.run(args, capture_output=True, text=True, cwd=self.build)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}\n{result.stderr}")

    def _link_flags(
        self,
        needed: list[str],
        rpath: str | None,
        runpath: str | None,
        link_dirs: list[Path] | None,
    ) -> list[str]:
        flags = [f"-L{d}" for d in [*(link_dirs or []), self.build]]
        flags += ["-Wl,--no-as-needed", "-Wl,--allow-shlib-undefined"]
        flags += [f"-l:{name}" for name in needed]
        if rpath is not None:
            flags += ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{rpath}"]
        if runpath is not None:
            flags += ["-Wl,--enable-new-dtags", f"-Wl,-rpath,{runpath}"]
        return flags

    def lib(
        self,
        soname: str,
        dest_dir: str,
        *,
        needed: tuple[str, ...] = (),
        rpath: str | None = None,
        runpath: str | None = None,
        m32: bool = False,
        musl: bool = False,
        file_name: str | None = None,
        link_dirs: list[Path] | None = None,
    ) -> Path:
        """Compile a shared library with this SONAME into dest_dir; it is also
        kept in the build dir (under the soname) for later links."""
        self._serial += 1
        source = self.build / f"lib{self._serial}.c"
        source.write_text(f"int slim_test_{self._serial}(void) {{ return {self._serial}; }}\n")
        out_dir = self.build / f"out{self._serial}"
        out_dir.mkdir()
        output = out_dir / soname
        compiler = "musl-gcc" if musl else "gcc"
        args = [
            compiler,
            "-shared",
            "-fPIC",
            "-o",
            str(output),
            str(source),
            f"-Wl,-soname,{soname}",
        ]
        if m32:
            args.insert(1, "-m32")
        self._compile(args + self._link_flags(list(needed), rpath, runpath, link_dirs))
        if not m32 and not (self.build / soname).exists():
            shutil.copy2(output, self.build / soname)
        target = self.host(dest_dir) / (file_name or soname)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(output, target)
        return target

    def exe(
        self,
        dest: str,
        *,
        needed: tuple[str, ...] = (),
        rpath: str | None = None,
        runpath: str | None = None,
        nodeflib: bool = False,
        musl: bool = False,
        link_dirs: list[Path] | None = None,
    ) -> Path:
        self._serial += 1
        source = self.build / f"main{self._serial}.c"
        source.write_text("int main(void) { return 0; }\n")
        output = self.build / f"prog{self._serial}"
        args = ["musl-gcc" if musl else "gcc", "-o", str(output), str(source)]
        args += self._link_flags(list(needed), rpath, runpath, link_dirs)
        if nodeflib:
            args.append("-Wl,-z,nodefaultlib")
        self._compile(args)
        target = self.host(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(output, target)
        return target

    # -- the real loader

    def ldconfig(self) -> None:
        subprocess.run(["ldconfig", "-r", str(self.path)], check=True, capture_output=True)

    def real_load(
        self,
        program: str,
        *,
        library_path: str | None = None,
        preload: str | None = None,
        interpreter: str = GLIBC_INTERP,
    ) -> RealLoad:
        """Run the root's own loader in trace mode on `program`, chrooted:
        LD_TRACE_LOADED_OBJECTS (what ldd uses) for glibc, --list for musl.
        Both print every library and "not found" for the ones missing."""
        args = [interpreter]
        if library_path is not None:
            args += ["--library-path", library_path]
        if preload is not None:
            args += ["--preload", preload]
        env = {"PATH": "/usr/bin:/bin"}
        if interpreter == MUSL_INTERP:
            args.append("--list")
        else:
            env["LD_TRACE_LOADED_OBJECTS"] = "1"
        args.append(program)
        root = str(self.path)

        def enter_root() -> None:
            os.chroot(root)
            os.chdir("/")

        result = subprocess.run(
            args, capture_output=True, text=True, env=env, preexec_fn=enter_root
        )
        load = RealLoad(output=result.stdout + result.stderr, returncode=result.returncode)
        for line in result.stdout.splitlines():
            match = _LIST_LINE.match(line)
            if not match or match.group(1).startswith("linux-vdso"):
                continue
            name, path = match.group(1), match.group(2)
            if path is None:
                load.paths[name] = name  # the interpreter: printed by its path
            else:
                load.paths[name] = None if path == "not found" else path
        return load
