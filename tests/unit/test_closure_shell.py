"""Shell scripts on plain directories: the commands at command position,
found on the image's PATH."""

from __future__ import annotations

import pytest

from slimmer.closure.common import Ref
from slimmer.closure.shell import ShellResolver, parse_shell, path_assignments
from slimmer.rootfs import RootFS
from tests.helpers.elfroot import ElfRoot

SCRIPT = rb"""#!/bin/sh
# a comment naming notacommand
set -eu
PATH=/opt/tools/bin:$PATH
LC_ALL=C sort -u "$1" | uniq -c > /tmp/out 2>&1
if [ -x /usr/bin/gzip ] && command -v bzip2 >/dev/null; then
    tar -czf "/tmp/x y.tgz" /data
elif test -d /srv; then
    : nothing
else
    exec env -i FOO=bar nice -n 5 timeout 10 sha256sum /data/*
fi
case "$mode" in
    report|summary) awk '{print $1}' file ;;
    (checksum) md5sum file
        ;;
    *) printf 'unknown\n' ;;
esac
for word in cut paste join; do echo "$word"; done
while read -r line; do wc -l; done < /etc/passwd
count=$(grep -c root /etc/passwd)
stamp=`date -u +%s`
echo "total: $(expr 1 + 2)"
cat <<EOF
nothere --in-a-heredoc
EOF
cat <<-'EOF'
	alsonot
	EOF
helper() {
    base64 -d
}
function other {
    xxd file
}
helper
. /usr/lib/lib.sh
$CMD --computed
"$@"
(cd /tmp && ls -la) &
[[ -n "$x" ]] && basename "$x"
{ seq 3; }
"""


@pytest.fixture
def refs() -> list[Ref]:
    return parse_shell(SCRIPT)


def test_commands_at_command_position(refs: list[Ref]) -> None:
    commands = [r.name for r in refs if r.kind == "command" and r.name is not None]
    assert commands == [
        "sort",
        "uniq",
        "tar",
        "env",
        "nice",
        "timeout",
        "sha256sum",
        "awk",
        "md5sum",
        "wc",
        "cat",
        "cat",
        "base64",
        "xxd",
        "ls",
        "basename",
        "seq",
        "grep",
        "date",
        "expr",
    ]


def test_what_is_not_a_command(refs: list[Ref]) -> None:
    names = {r.name for r in refs}
    for word in (
        "notacommand",
        "gzip",
        "bzip2",
        "cut",
        "paste",
        "join",
        "nothere",
        "alsonot",
        "helper",
        "report",
        "checksum",
        "FOO=bar",
        "LC_ALL=C",
        "echo",
        "printf",
    ):
        assert word not in names, word


def test_computed_sourced_and_lazy(refs: list[Ref]) -> None:
    computed = [r.text for r in refs if r.name is None]
    assert computed == ["$CMD --computed", '"$@"']
    (sourced,) = [r for r in refs if r.kind == "source"]
    assert sourced.name == "/usr/lib/lib.sh"
    lazy = {r.name for r in refs if not r.eager}
    assert lazy == {"base64", "xxd"}  # in function bodies
    (sort,) = [r for r in refs if r.name == "sort"]
    assert sort.line == 5 and sort.text == 'LC_ALL=C sort -u "$1" | uniq -c > /tmp/out 2>&1'


def test_path_assignments() -> None:
    assert path_assignments(SCRIPT) == ["/opt/tools/bin"]


def test_commands_found_on_the_path(elfroot: ElfRoot) -> None:
    elfroot.write("/usr/bin/sort", b"\x7fELF", mode=0o755)
    elfroot.write("/usr/bin/awk.doc", "not executable")
    elfroot.write("/opt/tools/bin/awk", "#!/bin/sh\n", mode=0o755)
    elfroot.write("/usr/lib/lib.sh", "")
    elfroot.write("/srv/cgi/run.sh", "")
    elfroot.write("/srv/cgi/lib/common.sh", "")
    resolver = ShellResolver(RootFS(elfroot.path), "/usr/bin:/bin", "/")
    script = "/srv/cgi/run.sh"
    resolver.script_path(script, SCRIPT)
    ask = {r.name: r for r in parse_shell(SCRIPT + b". lib/common.sh\n./helper.sh\n")}
    assert resolver.resolve(ask["sort"], script) == ["/usr/bin/sort"]
    assert resolver.resolve(ask["awk"], script) == ["/opt/tools/bin/awk"]  # the script's PATH
    assert resolver.resolve(ask["md5sum"], script) is None
    assert resolver.resolve(ask["/usr/lib/lib.sh"], script) == ["/usr/lib/lib.sh"]
    assert resolver.resolve(ask["lib/common.sh"], script) == ["/srv/cgi/lib/common.sh"]
    assert resolver.resolve(ask["./helper.sh"], script) is None
