"""The loader emulation, compared case by case with the real loader run in a
chroot of the same root (`ld.so --list`)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping

import pytest

from slimmer.loader import Libc, LinkMap, Loader, Via
from slimmer.rootfs import RootFS
from tests.helpers.elfroot import GLIBC_INTERP, MUSL_INTERP, ElfRoot

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def link_map(root: ElfRoot, program: str, env: Mapping[str, str] | None = None, **kw) -> LinkMap:
    outcome = Loader(RootFS(root.path), env=env, **kw).link_map(program)
    assert isinstance(outcome, LinkMap), outcome
    return outcome


def loaded(link_map: LinkMap) -> dict[str, str | None]:
    """name -> the path it was opened under, as `ld.so --list` prints it."""
    paths: dict[str, str | None] = {
        obj.requested: obj.opened_as for obj in link_map.objects if obj.via is not Via.EXECUTABLE
    }
    for dep in link_map.missing:
        paths.setdefault(dep.name, None)
    return paths


def assert_same_as_real(root: ElfRoot, program: str, **real_kw) -> LinkMap:
    env = {}
    if "library_path" in real_kw:
        env["LD_LIBRARY_PATH"] = real_kw["library_path"]
    if "preload" in real_kw:
        env["LD_PRELOAD"] = real_kw["preload"]
    ours = link_map(root, program, env)
    real = root.real_load(program, **real_kw)
    assert loaded(ours) == real.paths, real.output
    return ours


def test_plain_executable_matches_real_loader(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libone.so.1", "/usr/lib/x86_64-linux-gnu")
    glibc_root.exe("/usr/bin/prog", needed=("libone.so.1",))
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    assert ours.libc is Libc.GLIBC
    by_name = {obj.requested: obj for obj in ours.objects}
    assert by_name["libone.so.1"].via is Via.DEFAULT_DIRS
    assert by_name[GLIBC_INTERP].via is Via.INTERPRETER
    assert by_name[GLIBC_INTERP].canonical == "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"


def test_rpath_is_inherited_down_the_chain(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libleaf.so", "/opt/r")
    glibc_root.lib("libmid.so", "/opt/r", needed=("libleaf.so",))
    glibc_root.exe("/usr/bin/prog", needed=("libmid.so",), rpath="/opt/r")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    leaf = next(o for o in ours.objects if o.requested == "libleaf.so")
    assert leaf.via is Via.RPATH and leaf.opened_as == "/opt/r/libleaf.so"


def test_runpath_is_not_inherited(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libleaf.so", "/opt/r")
    glibc_root.lib("libmid.so", "/opt/r", needed=("libleaf.so",))
    glibc_root.exe("/usr/bin/prog", needed=("libmid.so",), runpath="/opt/r")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    assert [d.name for d in ours.missing] == ["libleaf.so"]


def test_runpath_of_requester_disables_the_rpath_chain(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libleaf.so", "/opt/r")
    glibc_root.lib("libmid.so", "/opt/m", needed=("libleaf.so",), runpath="/opt/nowhere")
    glibc_root.exe("/usr/bin/prog", needed=("libmid.so",), rpath="/opt/r:/opt/m")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    assert [d.name for d in ours.missing] == ["libleaf.so"]


def test_ld_library_path_comes_before_runpath(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libdup.so", "/opt/run")
    shutil.copy2(glibc_root.host("/opt/run/libdup.so"), glibc_root.mkdir("/opt/llp") / "libdup.so")
    glibc_root.exe("/usr/bin/prog", needed=("libdup.so",), runpath="/opt/run")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog", library_path="/opt/llp")
    dup = next(o for o in ours.objects if o.requested == "libdup.so")
    assert (dup.opened_as, dup.via) == ("/opt/llp/libdup.so", Via.LD_LIBRARY_PATH)


def test_rpath_comes_before_ld_library_path(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libdup.so", "/opt/rp")
    shutil.copy2(glibc_root.host("/opt/rp/libdup.so"), glibc_root.mkdir("/opt/llp") / "libdup.so")
    glibc_root.exe("/usr/bin/prog", needed=("libdup.so",), rpath="/opt/rp")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog", library_path="/opt/llp")
    assert next(o for o in ours.objects if o.requested == "libdup.so").via is Via.RPATH


def test_origin_through_a_symlinked_dir_is_physical(glibc_root: ElfRoot) -> None:
    # /opt/app/lib is a link into a vendor tree; libapp's $ORIGIN/../private
    # must climb out of the *real* directory, where the private lib is.
    glibc_root.lib("libpriv.so", "/opt/vendor/x/private")
    glibc_root.lib(
        "libapp.so", "/opt/vendor/x/lib", needed=("libpriv.so",), runpath="$ORIGIN/../private"
    )
    glibc_root.mkdir("/opt/app")
    glibc_root.symlink("/opt/app/lib", "../vendor/x/lib")
    glibc_root.exe("/usr/bin/prog", needed=("libapp.so",), runpath="/opt/app/lib")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    priv = next(o for o in ours.objects if o.requested == "libpriv.so")
    assert priv.opened_as == "/opt/app/lib/../private/libpriv.so"
    assert priv.canonical == "/opt/vendor/x/private/libpriv.so"
    assert any(h.path == "/opt/app/lib" for h in priv.hops)


def test_origin_of_the_executable_is_its_real_dir(elfroot: ElfRoot) -> None:
    elfroot.glibc_base()
    elfroot.lib("libown.so", "/opt/pkg/lib")
    elfroot.exe("/opt/pkg/bin/prog", needed=("libown.so",), runpath="$ORIGIN/../lib")
    elfroot.symlink("/usr/bin/prog", "/opt/pkg/bin/prog")
    ours = link_map(elfroot, "/usr/bin/prog")
    own = next(o for o in ours.objects if o.requested == "libown.so")
    assert own.canonical == "/opt/pkg/lib/libown.so" and own.via is Via.RUNPATH


def test_breadth_first_differs_from_depth_first(glibc_root: ElfRoot) -> None:
    # prog needs liba, libb. liba -> libm -> libz (libm's RUNPATH: /opt/dm);
    # libb -> libz (libb's RUNPATH: /opt/db). Breadth-first, libb's request
    # comes before libm's, so libz is the one in /opt/db; depth-first would
    # take /opt/dm.
    glibc_root.lib("libz.so", "/opt/db")
    shutil.copy2(glibc_root.host("/opt/db/libz.so"), glibc_root.mkdir("/opt/dm") / "libz.so")
    glibc_root.lib("libm2.so", "/opt/l", needed=("libz.so",), runpath="/opt/dm")
    glibc_root.lib("liba.so", "/opt/l", needed=("libm2.so",), runpath="/opt/l")
    glibc_root.lib("libb.so", "/opt/l", needed=("libz.so",), runpath="/opt/db")
    glibc_root.exe("/usr/bin/prog", needed=("liba.so", "libb.so"), runpath="/opt/l")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    libz = next(o for o in ours.objects if o.requested == "libz.so")
    assert libz.opened_as == "/opt/db/libz.so"
    assert libz.loaded_by == "/opt/l/libb.so"


def test_nodeflib_skips_default_dirs_and_cache(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libdef.so", "/usr/lib/x86_64-linux-gnu")
    glibc_root.lib("libmine.so", "/opt/r")
    glibc_root.symlink("/opt/r/libc.so.6", LIBC)
    glibc_root.write("/etc/ld.so.conf", "/usr/lib/x86_64-linux-gnu\n")
    glibc_root.ldconfig()
    glibc_root.exe(
        "/usr/bin/prog", needed=("libmine.so", "libdef.so"), runpath="/opt/r", nodeflib=True
    )
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    assert [d.name for d in ours.missing] == ["libdef.so"]
    without_flag = glibc_root.exe(
        "/usr/bin/prog2", needed=("libmine.so", "libdef.so"), runpath="/opt/r"
    )
    assert without_flag.exists()
    assert not assert_same_as_real(glibc_root, "/usr/bin/prog2").missing


def test_wrong_class_candidate_is_skipped(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libpick.so", "/opt/r32", m32=True)
    glibc_root.lib("libpick.so", "/opt/r64")
    glibc_root.exe("/usr/bin/prog", needed=("libpick.so",), runpath="/opt/r32:/opt/r64")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    assert (
        next(o for o in ours.objects if o.requested == "libpick.so").opened_as
        == "/opt/r64/libpick.so"
    )


def test_wrong_machine_candidate_is_skipped(glibc_root: ElfRoot) -> None:
    real = glibc_root.lib("libpick.so", "/opt/good")
    crafted = bytearray(real.read_bytes())
    crafted[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    glibc_root.write("/opt/arm/libpick.so", bytes(crafted))
    glibc_root.exe("/usr/bin/prog", needed=("libpick.so",), runpath="/opt/arm:/opt/good")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    assert (
        next(o for o in ours.objects if o.requested == "libpick.so").opened_as
        == "/opt/good/libpick.so"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"/* GNU ld script */\nGROUP ( libc.so.6 )\n", "invalid ELF header"),
        (b"\x7fELF\x02", "file too short"),
    ],
)
def test_garbage_candidate_is_fatal(glibc_root: ElfRoot, content: bytes, reason: str) -> None:
    glibc_root.lib("libpick.so", "/opt/good")
    glibc_root.write("/opt/bad/libpick.so", content)
    glibc_root.exe("/usr/bin/prog", needed=("libpick.so",), runpath="/opt/bad:/opt/good")
    ours = link_map(glibc_root, "/usr/bin/prog")
    real = glibc_root.real_load("/usr/bin/prog")
    assert real.returncode != 0 and "/opt/bad/libpick.so" in real.output
    (missing,) = ours.missing
    assert missing.name == "libpick.so"
    assert (
        missing.problem is not None and reason in missing.problem and "/opt/bad" in missing.problem
    )


def test_ld_cache_hit_versus_unindexed_dir(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libcached.so.1", "/opt/cached")
    glibc_root.write("/etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n")
    glibc_root.write("/etc/ld.so.conf.d/local.conf", "/opt/cached\n/opt/late\n")
    glibc_root.ldconfig()
    # Dropped in after ldconfig ran: ld.so never reads ld.so.conf, so it is invisible.
    glibc_root.lib("liblate.so.1", "/opt/late")
    glibc_root.exe("/usr/bin/prog", needed=("libcached.so.1", "liblate.so.1"))
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    cached = next(o for o in ours.objects if o.requested == "libcached.so.1")
    assert cached.via is Via.LD_CACHE
    assert [d.name for d in ours.missing] == ["liblate.so.1"]
    # "As if ldconfig ran": the conf dirs stand in for the cache.
    as_if = link_map(glibc_root, "/usr/bin/prog", as_if_ldconfig=True)
    assert not as_if.missing


def test_merged_usr_with_absolute_lib64_link(elfroot: ElfRoot) -> None:
    elfroot.glibc_base(absolute_lib64=True)
    elfroot.lib("libone.so.1", "/usr/lib/x86_64-linux-gnu")
    elfroot.exe("/usr/bin/prog", needed=("libone.so.1",))
    ours = assert_same_as_real(elfroot, "/bin/prog")
    interp = next(o for o in ours.objects if o.via is Via.INTERPRETER)
    assert interp.canonical == "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert [(h.path, h.target) for h in interp.hops] == [
        ("/lib64", "/usr/lib64"),
        ("/usr/lib64/ld-linux-x86-64.so.2", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
    ]
    closure = Loader(RootFS(elfroot.path)).closure(["/bin/prog"])
    assert {h.path for h in closure.symlinks} >= {
        "/bin",
        "/lib64",
        "/usr/lib64/ld-linux-x86-64.so.2",
    }


def test_symlink_loop_abandons_the_list_and_ends(glibc_root: ElfRoot) -> None:
    glibc_root.symlink("/opt/loop/libl.so", "libm.so")
    glibc_root.symlink("/opt/loop/libm.so", "libl.so")
    glibc_root.lib("libl.so", "/opt/after")  # later in the same RUNPATH: abandoned
    glibc_root.lib("libl.so", "/usr/lib/x86_64-linux-gnu")  # the default dirs still count
    glibc_root.exe("/usr/bin/prog", needed=("libl.so",), runpath="/opt/loop:/opt/after")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog")
    libl = next(o for o in ours.objects if o.requested == "libl.so")
    assert libl.via is Via.DEFAULT_DIRS


def test_preloads_come_first(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libpre.so", "/opt/pre")
    glibc_root.lib("libetc.so", "/usr/lib/x86_64-linux-gnu")
    glibc_root.write("/etc/ld.so.preload", "# comment\nlibetc.so\n")
    glibc_root.exe("/usr/bin/prog")
    ours = assert_same_as_real(glibc_root, "/usr/bin/prog", preload="/opt/pre/libpre.so")
    order = [o.requested for o in ours.objects if o.via is Via.PRELOAD]
    assert order == ["/opt/pre/libpre.so", "libetc.so"]


def test_needed_name_with_slash_and_dst_tokens(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libtok.so", "/usr/lib/x86_64-linux-gnu/tokdir")
    lib = glibc_root.host("/usr/lib/x86_64-linux-gnu/tokdir/libtok.so")
    assert lib.exists()
    loader = Loader(RootFS(glibc_root.path))
    facts = loader.facts_for(GLIBC_INTERP, loader.elf_info(LIBC).ident)  # type: ignore[union-attr]
    assert facts.lib == "lib/x86_64-linux-gnu" and facts.platform == "x86_64"
    assert facts.system_dirs[:2] == ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu")


def test_hwcaps_variants_are_all_reported(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libfast.so", "/opt/h/glibc-hwcaps/x86-64-v3")
    glibc_root.lib("libfast.so", "/opt/h")
    glibc_root.exe("/usr/bin/prog", needed=("libfast.so",), runpath="/opt/h")
    closure = Loader(RootFS(glibc_root.path)).closure(["/usr/bin/prog"])
    assert {"/opt/h/libfast.so", "/opt/h/glibc-hwcaps/x86-64-v3/libfast.so"} <= set(closure.files)
    real = glibc_root.real_load("/usr/bin/prog")
    assert real.paths["libfast.so"] in {
        "/opt/h/libfast.so",
        "/opt/h/glibc-hwcaps/x86-64-v3/libfast.so",
    }


def test_musl_binary(elfroot: ElfRoot) -> None:
    if shutil.which("musl-gcc") is None:
        pytest.fail("musl-gcc is needed (apt-get install musl-tools)")
    elfroot.musl_base()
    elfroot.write("/etc/ld-musl-x86_64.path", "/opt/mlib\n/usr/lib/x86_64-linux-musl\n")
    elfroot.lib("libmu.so", "/opt/mlib", musl=True)
    elfroot.exe("/bin/mprog", needed=("libmu.so",), musl=True)
    ours = link_map(elfroot, "/bin/mprog")
    assert ours.libc is Libc.MUSL
    real = elfroot.real_load("/bin/mprog", interpreter=MUSL_INTERP)
    by_name = {o.requested: o for o in ours.objects}
    assert by_name["libmu.so"].opened_as == real.paths["libmu.so"] == "/opt/mlib/libmu.so"
    assert by_name["libmu.so"].via is Via.MUSL_PATH
    # libc.so is the loader itself, never searched
    libc_dep = next(d for d in ours.dependencies if d.name == "libc.so")
    assert libc_dep.target == "/usr/lib/x86_64-linux-musl/libc.so"


def test_musl_without_path_file_uses_builtin_default(elfroot: ElfRoot) -> None:
    if shutil.which("musl-gcc") is None:
        pytest.fail("musl-gcc is needed (apt-get install musl-tools)")
    elfroot.musl_base()
    elfroot.lib("libmu.so", "/usr/local/lib", musl=True)
    elfroot.exe("/bin/mprog", needed=("libmu.so",), musl=True)
    ours = link_map(elfroot, "/bin/mprog")
    real = elfroot.real_load("/bin/mprog", interpreter=MUSL_INTERP)
    mu = next(o for o in ours.objects if o.requested == "libmu.so")
    assert mu.opened_as == real.paths["libmu.so"] == "/usr/local/lib/libmu.so"


def test_missing_libraries_are_listed_not_raised(glibc_root: ElfRoot) -> None:
    glibc_root.lib("libgone.so", "/opt/tmp")
    glibc_root.exe("/usr/bin/prog", needed=("libgone.so",))
    closure = Loader(RootFS(glibc_root.path)).closure(["/usr/bin/prog", "/etc/ld.so.conf", "/nope"])
    assert [(d.name, d.problem) for d in closure.missing] == [("libgone.so", "not found")]
    assert {s.path for s in closure.skipped} == {"/etc/ld.so.conf", "/nope"}


def test_shebang_script_pulls_in_its_interpreter(glibc_root: ElfRoot) -> None:
    glibc_root.exe("/usr/bin/interp")
    glibc_root.write("/app/run.sh", "#!/bin/interp -e\necho hi\n", mode=0o755)
    closure = Loader(RootFS(glibc_root.path)).closure(["/app/run.sh"])
    assert "/usr/bin/interp" in closure.files and LIBC in closure.files


def test_runtime_extras_add_nss_modules_and_libgcc(glibc_root: ElfRoot) -> None:
    glibc_root.write(
        "/etc/nsswitch.conf",
        "passwd: files ldap\nhosts: files [NOTFOUND=return] mdns4 dns\nnetgroup: nis\n",
    )
    glibc_root.lib("libnss_ldap.so.2", "/usr/lib/x86_64-linux-gnu")
    glibc_root.lib("libnss_mdns4.so.2", "/usr/lib/x86_64-linux-gnu")
    glibc_root.lib("libgcc_s.so.1", "/usr/lib/x86_64-linux-gnu")
    glibc_root.exe("/usr/bin/prog")
    loader = Loader(RootFS(glibc_root.path))
    plain = loader.closure(["/usr/bin/prog"])
    extras = loader.closure(["/usr/bin/prog"], runtime_extras=True)
    added = set(extras.files) - set(plain.files)
    assert added == {
        "/usr/lib/x86_64-linux-gnu/libnss_ldap.so.2",
        "/usr/lib/x86_64-linux-gnu/libnss_mdns4.so.2",
        "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
    }
    nss = next(o for m in extras.link_maps for o in m.objects if o.requested == "libnss_ldap.so.2")
    assert nss.via is Via.RUNTIME and nss.loaded_by == LIBC
    # libnss_nis.so.2 is not in the image: glibc copes, so it is not "missing"
    assert extras.missing == ()
    (absent,) = [d for m in extras.link_maps for d in m.dependencies if d.target is None]
    assert (absent.name, absent.optional) == ("libnss_nis.so.2", True)


def test_gconv_modules_come_with_their_own_deps(glibc_root: ElfRoot) -> None:
    gconv = "/usr/lib/x86_64-linux-gnu/gconv"
    glibc_root.lib("libJISX.so", gconv)
    glibc_root.lib("EUC-XX.so", gconv, needed=("libJISX.so",), runpath="$ORIGIN")
    glibc_root.exe("/usr/bin/prog")
    loader = Loader(RootFS(glibc_root.path))
    assert not any("gconv" in f for f in loader.closure(["/usr/bin/prog"]).files)
    closure = loader.closure(["/usr/bin/prog"], gconv=True)
    assert {f"{gconv}/EUC-XX.so", f"{gconv}/libJISX.so"} <= set(closure.files)
    jis = next(o for m in closure.link_maps for o in m.objects if o.requested == "libJISX.so")
    assert jis.via is Via.RUNPATH
