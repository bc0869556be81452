"""Coverage beyond the probes: each fixture app is traced with probes that
take ONE route; the micro image is then asked for the routes the probes
never took, on the fat image and on the micro image, through plain
containers and HTTP (or `docker run IMAGE MODE` for a job), and must answer
the same. What each rule kept says why, in the report and in `slim
explain`. The crawl is off (--no-crawl): these are the rules' tests, and a
crawl would reach the linked pages without them (tests/integration/
test_discovery.py tests the crawl)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from slimmer.cli import cli
from slimmer.engine import Engine
from tests.helpers.serve import serve_and_get
from tests.integration.conftest import Micro, report_path


def same_answers(engine: Engine, fat: str, micro: str, port: int, paths: list[str], run_id: str):
    """The fat image's answers, after checking the micro image gives the same."""
    expected = serve_and_get(engine, fat, port, paths, run_id)
    assert serve_and_get(engine, micro, port, paths, run_id) == expected
    return dict(zip(paths, expected, strict=True))


def explained(tmp_path: Path, image: str, path: str) -> str:
    result = CliRunner().invoke(cli, ["explain", str(report_path(tmp_path, image)), path])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_sites_pages_subfolders_and_error_page(
    engine: Engine, fixture_image, micro: Micro, run_id: str, tmp_path: Path
) -> None:
    """lighttpd served / from /var/www/html, a folder its package made and
    another package owns files in: the site's own pages below it come too."""
    image = fixture_image("docsite")
    tag, report = micro(image, "--no-crawl")
    kept = {f["path"]: f for f in report["files"]}
    guide = kept["/var/www/html/docs/guide/install.html"]
    assert guide["why"] == ["app-content"]
    assert guide["detail"] == "in /var/www/html, from which the app read /var/www/html/index.html"
    # the rule keeps the files no package owns; the package's own stay out
    assert "/var/www/html/robots.txt" not in kept
    paths = ["/docs/index.html", "/docs/guide/install.html", "/downloads/", "/nothing-here"]
    answers = same_answers(engine, image, tag, 80, paths, run_id)
    assert answers["/docs/guide/install.html"][0] == 200
    assert b"notes-1.1.txt" in answers["/downloads/"][1]
    error_page = b"<h1>Not here</h1>\n<p>This page is the site's own.</p>\n"
    assert answers["/nothing-here"] == (404, error_page)
    assert "from: in /var/www/html" in explained(tmp_path, image, "/var/www/html/errors/404.html")


def test_the_other_scripts_of_a_cgi_folder(
    engine: Engine, fixture_image, micro: Micro, run_id: str, tmp_path: Path
) -> None:
    """apache ran hello.sh; status.sh's commands and info.pl's perl, its core
    modules and their XS parts were never seen."""
    image = fixture_image("cgisite")
    tag, report = micro(
        image, "--no-crawl", "--no-default-probe", "--http-probe", "/cgi-bin/hello.sh"
    )
    kept = {f["path"]: f for f in report["files"]}
    info = kept["/usr/lib/cgi-bin/info.pl"]
    assert info["why"] == ["program-sibling"]
    assert info["detail"] == "beside /usr/lib/cgi-bin/hello.sh, which the app ran"
    assert "/usr/bin/perl" in kept
    assert any(p.endswith("/auto/Digest/MD5/MD5.so") for p in kept)
    assert "script-command" in kept["/usr/bin/sort"]["why"]
    paths = ["/cgi-bin/status.sh?abc", "/cgi-bin/info.pl?x=1"]
    answers = same_answers(engine, image, tag, 80, paths, run_id)
    assert answers["/cgi-bin/status.sh?abc"][1].startswith(b"most: 2 apple\nupper: ABC\n")
    assert b'"md5":"' in answers["/cgi-bin/info.pl?x=1"][1]
    text = explained(tmp_path, image, "/usr/share/perl/5.36.0/JSON/PP.pm")
    assert "from: import closure of /usr/lib/cgi-bin/info.pl:5 (use JSON::PP)" in text


def test_a_python_apps_lazy_imports_and_a_zone_asked_for_later(
    engine: Engine, fixture_image, micro: Micro, run_id: str, tmp_path: Path
) -> None:
    """GET / only: the routes import statistics, zoneinfo (and read another
    zone), the app's own package, sqlite3 and decimal (C extensions with
    their libraries) when they run."""
    image = fixture_image("pyroutes")
    tag, report = micro(image, "--no-crawl")
    kept = {f["path"]: f for f in report["files"]}
    assert kept["/usr/share/zoneinfo/Asia/Tokyo"]["why"] == ["data-set"]
    assert "import-closure" in kept["/srv/app/handlers/report.py"]["why"]
    assert any("libsqlite3" in p for p in kept)
    paths = [
        "/stats?values=1,2,9",
        "/time?tz=Asia/Tokyo",
        "/time?tz=America/Sao_Paulo",
        "/report?rows=x,1;y,2",
        "/db",
        "/money",
        "/plugin?name=json",
    ]
    answers = same_answers(engine, image, tag, 8000, paths, run_id)
    assert answers["/time?tz=Asia/Tokyo"] == (
        200,
        b'{"time": "2024-01-01T21:00:00+09:00", "zone": "Asia/Tokyo"}\n',
    )
    assert answers["/money"] == (200, b'{"sum": "0.3"}\n')
    # the module a route names at run time is reported, not guessed
    (unresolved,) = report["unresolved"]
    assert unresolved["requester"] == "/srv/app/server.py" and unresolved["why"] == "computed"
    text = explained(tmp_path, image, "/srv/app/server.py")
    assert 'importlib.import_module(query.get("name", ["json"])[0]) (computed)' in text


def test_a_node_apps_requires_by_name(
    engine: Engine, fixture_image, micro: Micro, run_id: str
) -> None:
    """GET / only: the routes require the app's own modules, a package of its
    node_modules (main, a scoped dependency's exports) and one of Debian's
    global folder."""
    image = fixture_image("noderoutes")
    tag, report = micro(image, "--no-crawl")
    kept = {f["path"]: f for f in report["files"]}
    scoped = kept["/srv/app/node_modules/@local/repeat/dist/repeat.cjs"]
    assert scoped["why"] == ["import-closure"]
    assert kept["/usr/share/nodejs/ms/index.js"]["why"] == ["import-closure"]
    paths = ["/greet?name=ann", "/pad?text=ab", "/ms?v=3d", "/config"]
    answers = same_answers(engine, image, tag, 3000, paths, run_id)
    assert answers["/pad?text=ab"] == (200, b"......ab\n")
    assert answers["/ms?v=3d"] == (200, b"259200000\n")


def test_a_shell_jobs_other_modes(engine: Engine, fixture_image, micro: Micro, run_id: str) -> None:
    """The trace ran the default mode; the others run commands (one of them a
    script of its own package: gunzip), a helper script and other zones."""
    image = fixture_image("cmdjob")
    tag, report = micro(image, "--until-exit")
    kept = {f["path"]: f for f in report["files"]}
    assert kept["/usr/local/lib/job/summarize.sh"]["why"] == ["script-command"]
    assert "script-command" in kept["/usr/bin/fold"]["why"]
    for mode in ("report", "checksum", "zones"):
        expected = engine.run_to_exit(image, [mode], run_id)
        assert expected[0] == 0, (mode, expected)
        assert engine.run_to_exit(tag, [mode], run_id) == expected, mode
