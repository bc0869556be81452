"""The coverage rules of the file set on plain directories: the code
closure of what the trace saw loaded, the app's own content recursively,
the programs beside one the app ran, and the keyed data sets; with their
provenance in the report and in `slim explain`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimmer import appcontent
from slimmer.assemble import selection_request
from slimmer.builder import BuildOptions
from slimmer.cli import cli
from slimmer.cli.options import kept_data_sets
from slimmer.fileset import Entry, Reason, Selection, SelectionRequest, select_files
from slimmer.report import build_report, explain
from slimmer.rootfs import Kind, RootFS
from slimmer.trace import Access, ImageConfig, Lookup, PathAction, TracedFile
from tests.helpers.elfroot import ElfRoot

MULTIARCH = "/usr/lib/x86_64-linux-gnu"


def traced(*rows: tuple[str, str]) -> tuple[TracedFile, ...]:
    return tuple(
        TracedFile(path, Kind.FILE, tuple(Access(a) for a in access.split(",")))
        for path, access in rows
    )


def dpkg(root: ElfRoot, packages: dict[str, list[str]]) -> None:
    """A dpkg database: each package and the paths it lists."""
    stanzas = [
        f"Package: {name}\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n"
        for name in packages
    ]
    root.write("/var/lib/dpkg/status", "\n".join(stanzas))
    for name, paths in packages.items():
        root.write(f"/var/lib/dpkg/info/{name}.list", "\n".join(paths) + "\n")


def select(root: ElfRoot, **request) -> tuple[Selection, dict[str, Entry]]:
    request = {k: tuple(v) if isinstance(v, list) else v for k, v in request.items()}
    selection = select_files(RootFS(root.path), SelectionRequest(**request))
    return selection, {e.path: e for e in selection.entries}


def compile_with_strings(root: ElfRoot, dest: str, strings: list[str]) -> None:
    """A real executable whose .rodata holds these NUL-terminated strings."""
    source = root.build / f"strings{len(strings)}.c"
    items = ", ".join(f'"{s}"' for s in strings)
    source.write_text(
        f"const char *volatile table[] = {{{items}, 0}};\n"
        "int main(void) { return table[0][0] == 0; }\n"
    )
    output = root.build / f"strings{len(strings)}"
    subprocess.run(["gcc", "-o", str(output), str(source)], check=True)
    root.copy_in(str(output), dest)
    root.host(dest).chmod(0o755)


# -- Python ----------------------------------------------------------------------

APP = """\
import json

def route(name):
    import statistics
    import _fast
    from handlers import report
    importlib.import_module(name)
    import not_installed
"""


@pytest.fixture
def pyimage(elfroot: ElfRoot) -> ElfRoot:
    elfroot.glibc_base()
    elfroot.exe("/usr/bin/python3.11")
    stdlib = "/usr/lib/python3.11"
    elfroot.write(f"{stdlib}/os.py", "")
    elfroot.write(f"{stdlib}/json/__init__.py", "def later():\n    import traced_lazy\n")
    elfroot.write(f"{stdlib}/traced_lazy.py", "")
    elfroot.write(f"{stdlib}/site.py", "def later():\n    import site_lazy\n")
    elfroot.write(f"{stdlib}/site_lazy.py", "")
    elfroot.write(
        f"{stdlib}/statistics.py",
        "import fractions\ntry:\n    import _statistics\nexcept ImportError:\n"
        "    import _pystatistics\n\ndef f():\n    import direct_lazy\n",
    )
    elfroot.write(f"{stdlib}/direct_lazy.py", "")
    elfroot.write(f"{stdlib}/fractions.py", "def g():\n    import lazy_in_stdlib\n")
    elfroot.write(f"{stdlib}/_statistics.py", "")
    elfroot.write(f"{stdlib}/_pystatistics.py", "")
    elfroot.write(f"{stdlib}/lazy_in_stdlib.py", "")
    elfroot.lib("libfastdep.so.1", MULTIARCH)
    site = "/usr/local/lib/python3.11/dist-packages"
    elfroot.lib("_fast.cpython-311-x86_64-linux-gnu.so", site, needed=("libfastdep.so.1",))
    elfroot.write("/srv/app/app.py", APP)
    elfroot.write("/srv/app/handlers/__init__.py", "")
    elfroot.write("/srv/app/handlers/report.py", "def r():\n    import csv\n")
    elfroot.write(f"{stdlib}/csv.py", "")
    elfroot.write("/srv/app/build.sh", "#!/bin/sh\ngcc -o app app.c\n", mode=0o755)
    elfroot.exe("/usr/bin/gcc")
    owned = [stdlib, *(f"{stdlib}/{n}" for n in ("os.py", "statistics.py", "fractions.py"))]
    owned += [f"{stdlib}/{n}" for n in ("_statistics.py", "_pystatistics.py", "lazy_in_stdlib.py")]
    owned += [f"{stdlib}/direct_lazy.py"]
    owned += [f"{stdlib}/json/__init__.py", f"{stdlib}/traced_lazy.py", f"{stdlib}/csv.py"]
    owned += [f"{stdlib}/site.py", f"{stdlib}/site_lazy.py"]
    dpkg(elfroot, {"libpython3.11-stdlib": owned})
    return elfroot


PY_TRACE = traced(
    ("/usr/bin/python3.11", "opened,executed"),
    ("/srv/app/app.py", "opened,read"),
    ("/usr/lib/python3.11/json/__init__.py", "opened,read"),
    ("/usr/lib/python3.11/site.py", "opened,read"),
)


def test_the_import_closure_of_the_app(pyimage: ElfRoot) -> None:
    selection, kept = select(pyimage, traced=PY_TRACE, env={"PATH": "/usr/bin"})
    statistics = kept["/usr/lib/python3.11/statistics.py"]
    assert statistics.reasons == (Reason.IMPORT_CLOSURE,)
    assert statistics.detail == "import closure of /srv/app/app.py:4 (import statistics)"
    assert kept["/usr/lib/python3.11/fractions.py"].detail.startswith(
        "import closure of /usr/lib/python3.11/statistics.py:1"
    )
    # the app's own modules at any depth; the library's module the app imports
    # directly at any depth too (the app may call any of its functions); the
    # library's further only what runs when they are loaded
    assert kept["/srv/app/handlers/report.py"].detail.splitlines() == [
        "in /srv/app, from which the app read /srv/app/app.py",
        "import closure of /srv/app/app.py:6 (from handlers import report)",
    ]
    assert "/usr/lib/python3.11/csv.py" in kept  # in a function of the app's own module
    assert "/usr/lib/python3.11/direct_lazy.py" in kept
    assert "/usr/lib/python3.11/lazy_in_stdlib.py" not in kept
    assert "/usr/lib/python3.11/traced_lazy.py" in kept  # json: loaded, and the app's import
    assert "/usr/lib/python3.11/site_lazy.py" not in kept  # site: loaded, not the app's import
    # the fallback of an import that resolves is not followed
    assert "/usr/lib/python3.11/_statistics.py" in kept
    assert "/usr/lib/python3.11/_pystatistics.py" not in kept
    # a C extension and its ELF closure
    extension = "/usr/local/lib/python3.11/dist-packages/_fast.cpython-311-x86_64-linux-gnu.so"
    assert Reason.IMPORT_CLOSURE in kept[extension].reasons
    assert kept[f"{MULTIARCH}/libfastdep.so.1"].reasons == (Reason.ELF_CLOSURE,)
    assert [(u.requester, u.line, u.text, u.why) for u in selection.unresolved] == [
        ("/srv/app/app.py", 7, "importlib.import_module(name)", "computed"),
        ("/srv/app/app.py", 8, "import not_installed", "not found in the image"),
    ]
    # the app's content is kept, but what nothing loaded is no root of the closure
    assert kept["/srv/app/build.sh"].reasons == (Reason.APP_CONTENT,)
    assert "/usr/bin/gcc" not in kept
    _, without = select(pyimage, traced=PY_TRACE, code_closure=False)
    assert "/usr/lib/python3.11/statistics.py" not in without


# -- CGI: programs beside the one the app ran, with their closure ------------------


@pytest.fixture
def cgi(elfroot: ElfRoot) -> ElfRoot:
    elfroot.glibc_base()
    perl_inc = ["/usr/share/perl/5.36", f"{MULTIARCH}/perl/5.36"]
    compile_with_strings(elfroot, "/usr/bin/perl", perl_inc)
    elfroot.write("/usr/share/perl/5.36/JSON/PP.pm", "package JSON::PP;\nuse Exporter;\n1;\n")
    elfroot.write("/usr/share/perl/5.36/Exporter.pm", "1;")
    elfroot.write("/usr/share/perl/5.36/strict.pm", "1;")
    elfroot.exe("/usr/bin/sort")
    elfroot.exe("/usr/bin/dash")
    elfroot.symlink("/bin/sh", "dash")
    elfroot.write("/usr/lib/cgi-bin/hello.sh", "#!/bin/sh\necho hello\n", mode=0o755)
    elfroot.write(
        "/usr/lib/cgi-bin/info.pl", "#!/usr/bin/perl\nuse strict;\nuse JSON::PP;\n", mode=0o755
    )
    elfroot.write("/usr/lib/cgi-bin/status.sh", "#!/bin/sh\nsort /etc/motd\n", mode=0o755)
    elfroot.write("/usr/lib/cgi-bin/readme.txt", "not a program")
    elfroot.write("/usr/lib/cgi-bin/packaged.cgi", "#!/bin/sh\n", mode=0o755)
    elfroot.exe("/usr/bin/other-command")
    dpkg(elfroot, {"webserver": ["/usr/lib/cgi-bin", "/usr/lib/cgi-bin/packaged.cgi"]})
    return elfroot


CGI_LOOKUPS = (Lookup("/usr/lib/cgi-bin/hello.sh", PathAction.EXEC, True, True),)


def test_the_other_programs_of_a_cgi_folder_with_their_closure(cgi: ElfRoot) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    _, kept = select(cgi, lookups=CGI_LOOKUPS, env=env)
    info = kept["/usr/lib/cgi-bin/info.pl"]
    assert info.reasons == (Reason.PROGRAM_SIBLING,)
    assert info.detail == "beside /usr/lib/cgi-bin/hello.sh, which the app ran"
    assert Reason.ELF_CLOSURE in kept["/usr/bin/perl"].reasons  # its interpreter
    pp = kept["/usr/share/perl/5.36/JSON/PP.pm"]
    assert pp.detail == "import closure of /usr/lib/cgi-bin/info.pl:3 (use JSON::PP)"
    assert "/usr/share/perl/5.36/Exporter.pm" in kept  # what JSON::PP uses
    sort = kept["/usr/bin/sort"]
    assert set(sort.reasons) == {Reason.SCRIPT_COMMAND, Reason.ELF_CLOSURE}
    assert sort.detail == "command of /usr/lib/cgi-bin/status.sh:2 (sort /etc/motd)"
    assert "/usr/lib/cgi-bin/readme.txt" not in kept  # not a program
    assert "/usr/lib/cgi-bin/packaged.cgi" not in kept  # a package's
    assert "/usr/bin/other-command" not in kept  # a folder on PATH is not a folder of programs
    _, without = select(cgi, lookups=CGI_LOOKUPS, env=env, program_siblings=False)
    assert "/usr/lib/cgi-bin/info.pl" not in without


def test_an_apps_own_dir_with_its_start_script_is_no_folder_of_programs(cgi: ElfRoot) -> None:
    """The app ran /srv/app/start.sh, among its sources: its build script
    is no program of the app's."""
    cgi.write("/srv/app/start.sh", "#!/bin/sh\nexec sort\n", mode=0o755)
    cgi.write("/srv/app/build.sh", "#!/bin/sh\nother-command\n", mode=0o755)
    for name in ("app.js", "package.json", "README"):
        cgi.write(f"/srv/app/{name}", "")
    lookups = (Lookup("/srv/app/start.sh", PathAction.EXEC, True, True),)
    _, kept = select(cgi, lookups=lookups, env={"PATH": "/usr/bin"}, app_content=False)
    assert "/srv/app/build.sh" not in kept and "/usr/bin/other-command" not in kept


# -- the app's own content --------------------------------------------------------


@pytest.fixture
def site(elfroot: ElfRoot) -> ElfRoot:
    elfroot.write("/var/www/html/index.html", "<p>home</p>")
    elfroot.write("/var/www/html/default.html", "the package's page")
    elfroot.write("/var/www/html/docs/guide.html", "<p>guide</p>")
    elfroot.write("/var/www/html/errors/404.html", "<p>missing</p>")
    elfroot.write("/var/www/html/assets/theme.css", "the package's style")
    elfroot.write("/var/www/html/node_modules/lib/index.js", "code")
    elfroot.write("/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    elfroot.write("/etc/shadow", "secret")
    elfroot.write("/etc/ssl/private/key.pem", "secret")
    elfroot.write("/etc/nsswitch.conf", "")
    elfroot.write("/usr/lib/python3/dist-packages/pkg/__init__.py", "")
    elfroot.write("/usr/lib/python3/dist-packages/pkg/__pycache__/__init__.cpython-311.pyc", "")
    elfroot.write("/usr/lib/python3/dist-packages/pkg/__pycache__/other.cpython-311.pyc", "")
    dpkg(
        elfroot,
        {
            "site-theme": [
                "/var",
                "/var/www",
                "/var/www/html",
                "/var/www/html/default.html",
                "/var/www/html/assets",
                "/var/www/html/assets/theme.css",
            ],
            "base-files": ["/etc", "/etc/nsswitch.conf"],
            "python3-pkg": ["/usr/lib/python3/dist-packages/pkg/__init__.py"],
        },
    )
    return elfroot


SITE_TRACE = traced(
    ("/var/www/html/index.html", "opened,read"),
    ("/etc/passwd", "opened,read"),
    ("/usr/lib/python3/dist-packages/pkg/__pycache__/__init__.cpython-311.pyc", "opened,read"),
)


def test_the_sites_own_files_below_a_folder_a_package_owns_files_in(site: ElfRoot) -> None:
    selection, kept = select(site, traced=SITE_TRACE)
    for path in ("/var/www/html/docs/guide.html", "/var/www/html/errors/404.html"):
        assert kept[path].reasons == (Reason.APP_CONTENT,), path
        assert kept[path].detail == "in /var/www/html, from which the app read " + (
            "/var/www/html/index.html"
        )
    assert "/var/www/html/default.html" not in kept  # the package's own: not this rule's
    assert "/var/www/html/assets/theme.css" not in kept
    assert "/var/www/html/node_modules/lib/index.js" not in kept  # a code tree
    # system folders are not content, whoever owns what in them
    assert "/etc/shadow" not in kept and "/etc/ssl/private/key.pem" not in kept
    assert "/usr/lib/python3/dist-packages/pkg/__pycache__/other.cpython-311.pyc" not in kept
    assert not selection.warnings
    _, without = select(site, traced=SITE_TRACE, app_content=False)
    assert "/var/www/html/docs/guide.html" not in without


def test_a_subfolder_over_the_bound_is_left_out_whole(
    site: ElfRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(appcontent, "MAX_BYTES", 30)
    site.write("/var/www/html/media/big.bin", b"x" * 64)
    site.write("/var/www/html/media/small.txt", "s")
    selection, kept = select(site, traced=SITE_TRACE)
    assert "/var/www/html/docs/guide.html" in kept
    assert "/var/www/html/media/small.txt" not in kept
    assert any("/var/www/html/media is larger than the bound" in w for w in selection.warnings)


def test_a_subfolder_of_too_many_folders_is_left_out(
    site: ElfRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tree of many folders (a cache, a data store) is not walked to its end."""
    monkeypatch.setattr(appcontent, "MAX_DIRS", 5)
    for index in range(6):
        site.write(f"/var/www/html/cache/d{index}/entry", "x")
    selection, kept = select(site, traced=SITE_TRACE)
    assert "/var/www/html/docs/guide.html" in kept
    assert not any(path.startswith("/var/www/html/cache/") for path in kept)
    assert any("/var/www/html/cache is larger than the bound" in w for w in selection.warnings)


# -- data sets keyed by input -----------------------------------------------------


@pytest.fixture
def data(elfroot: ElfRoot) -> ElfRoot:
    elfroot.glibc_base()
    zoneinfo = "/usr/share/zoneinfo"
    for zone in ("Etc/UTC", "Asia/Tokyo", "Europe/Paris", "right/Asia/Tokyo"):
        elfroot.write(f"{zoneinfo}/{zone}", "TZif")
    elfroot.write(f"{zoneinfo}/tzdata.zi", "")
    elfroot.symlink(f"{zoneinfo}/UTC", "Etc/UTC")
    elfroot.write("/usr/lib/python3.11/zoneinfo/__init__.py", "")
    elfroot.write("/usr/lib/python3.11/zoneinfo/_common.py", "")
    gconv = f"{MULTIARCH}/gconv"
    elfroot.write(f"{gconv}/gconv-modules", "")
    elfroot.lib("libJIS.so", f"{gconv}/libJIS.so")
    elfroot.lib("EUC-JP.so", gconv, needed=("libJIS.so",), link_dirs=[elfroot.host(gconv)])
    elfroot.lib("ISO8859-1.so", gconv)
    elfroot.write("/lib/terminfo/x/xterm", "")
    elfroot.write("/usr/share/terminfo/l/linux", "")
    return elfroot


DATA_TRACE = traced(
    ("/usr/share/zoneinfo/Etc/UTC", "opened,read"),
    (f"{MULTIARCH}/gconv/ISO8859-1.so", "opened,read"),
    ("/lib/terminfo/x/xterm", "opened,read"),
    ("/usr/lib/python3.11/zoneinfo/__init__.py", "opened,read"),
)


def test_a_set_whose_member_the_app_read_is_kept_whole(data: ElfRoot) -> None:
    _, kept = select(data, traced=DATA_TRACE, app_content=False)
    tokyo = kept["/usr/share/zoneinfo/Asia/Tokyo"]
    assert tokyo.reasons == (Reason.DATA_SET,)
    assert tokyo.detail == (
        "zoneinfo set (/usr/share/zoneinfo), of which the app read /usr/share/zoneinfo/Etc/UTC"
    )
    assert kept["/usr/share/zoneinfo/UTC"].link == "Etc/UTC"
    assert "/usr/share/zoneinfo/right/Asia/Tokyo" not in kept  # leap-second variants
    assert Reason.DATA_SET in kept[f"{MULTIARCH}/gconv/EUC-JP.so"].reasons
    assert Reason.ELF_CLOSURE in kept[f"{MULTIARCH}/gconv/libJIS.so/libJIS.so"].reasons
    assert Reason.DATA_SET in kept["/usr/share/terminfo/l/linux"].reasons  # ncurses looks there too
    # a Python package named zoneinfo is not a set of zones
    assert "/usr/lib/python3.11/zoneinfo/_common.py" not in kept
    _, without = select(data, traced=DATA_TRACE, keep_data=("gconv", "terminfo"))
    assert "/usr/share/zoneinfo/Asia/Tokyo" not in without
    assert f"{MULTIARCH}/gconv/EUC-JP.so" in without


def test_the_local_zone_through_etc_localtime_is_not_a_zone_chosen_by_input(
    data: ElfRoot,
) -> None:
    """Almost every program reads /etc/localtime (glibc's local zone): with
    the names the app used known, that alone keeps no zoneinfo set; a zone
    the app named itself (TZ=Asia/Tokyo, zoneinfo.ZoneInfo("UTC")) does."""
    data.symlink("/etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
    zone_only = traced(("/usr/share/zoneinfo/Etc/UTC", "opened,read"))
    through_localtime = (Lookup("/etc/localtime", PathAction.OPEN, True, True),)
    _, local = select(data, traced=zone_only, lookups=through_localtime, app_content=False)
    assert "/usr/share/zoneinfo/Asia/Tokyo" not in local
    assert "/usr/share/zoneinfo/Etc/UTC" in local  # what it read is kept, as traced
    by_name = (
        *through_localtime,
        Lookup("/usr/share/zoneinfo/UTC", PathAction.OPEN, True, True),
    )
    _, chosen = select(data, traced=zone_only, lookups=by_name, app_content=False)
    assert chosen["/usr/share/zoneinfo/Asia/Tokyo"].reasons == (Reason.DATA_SET,)
    _, unknown = select(data, traced=zone_only, app_content=False)  # no names seen
    assert "/usr/share/zoneinfo/Asia/Tokyo" in unknown
    # the kept code loads zones by name (zoneinfo.ZoneInfo(zone) on a route
    # nobody probed): the local zone it read is enough
    loads_zones = traced(
        ("/usr/share/zoneinfo/Etc/UTC", "opened,read"),
        ("/usr/lib/python3.11/zoneinfo/__init__.py", "opened,read"),
    )
    _, used = select(data, traced=loads_zones, lookups=through_localtime, app_content=False)
    assert used["/usr/share/zoneinfo/Asia/Tokyo"].reasons == (Reason.DATA_SET,)


def test_no_keep_data_reaches_the_selection() -> None:
    assert kept_data_sets(("zoneinfo", "gconv")) == ("locales", "terminfo")
    assert kept_data_sets(("all",)) == ()
    options = BuildOptions(tags=("t",), keep_data=kept_data_sets(("terminfo",)), code_closure=False)
    request = selection_request([], ImageConfig(), options)
    assert request.keep_data == ("zoneinfo", "locales", "gconv") and not request.code_closure
    refused = CliRunner().invoke(cli, ["build", "img", "-t", "x", "--no-keep-data", "fonts"])
    assert refused.exit_code == 2 and "'fonts' is not one of" in refused.output


# -- the report and explain -------------------------------------------------------


def test_explain_names_the_rule_where_from_and_what_was_not_resolved(
    pyimage: ElfRoot, tmp_path: Path
) -> None:
    selection, _ = select(pyimage, traced=PY_TRACE, env={"PATH": "/usr/bin"})
    report = build_report(
        image="fat",
        image_id="sha256:1",
        tag="micro",
        micro_id=None,
        fat_size=1,
        micro_size=None,
        selection=selection,
        dockerfile_warnings=[],
        traces=[],
        seconds={},
    )
    lines = explain(report, "/usr/lib/python3.11/statistics.py").lines
    assert "  from: import closure of /srv/app/app.py:4 (import statistics)" in lines
    assert any("imports, requires or includes it" in line for line in lines)
    app = explain(report, "/srv/app/app.py").lines
    assert "    line 7: importlib.import_module(name) (computed)" in app
    missing = explain(report, "/srv/app/plugins/x.py").lines
    assert "    /srv/app/app.py:7: importlib.import_module(name)" in missing
    assert [u.text for u in report.unresolved] == [
        "importlib.import_module(name)",
        "import not_installed",
    ]
