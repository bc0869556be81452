"""Perl's closure on plain directories: use/require read without perl,
modules and their XS parts found along @INC, which is read out of the
perl binary and libperl themselves."""

from __future__ import annotations

import subprocess

from slimmer.closure.paths import perl_inc
from slimmer.closure.perl import PerlResolver, parse_perl
from slimmer.rootfs import RootFS
from tests.helpers.elfroot import ElfRoot

CGI = b"""\
#!/usr/bin/perl
use strict;
use warnings;
use 5.010;
use v5.36;
use JSON::PP;
use POSIX qw(floor);
use parent -norequire, 'Local::Base';
use base qw(Exporter Local::Mixin);
use FindBin;
use lib "$FindBin::Bin/lib", '/opt/perl5';
no warnings 'once';
require Local::Top;
require "helpers.pl";
my $x = 1; require Data::Dumper;

BEGIN {
    if ($] > 5) {
        require Compile::Time;
    }
}
my $handler = sub { require In::Anon; };

sub later {
    require Digest::SHA;
    require $computed;
    do "local.pl";
}

print <<"EOF";
use Not::A::Module;
EOF

=pod

use Also::Not::Code;

=cut

__END__
use After::End;
"""


def test_statements_perl_runs() -> None:
    refs = parse_perl(CGI)
    names = [(r.name, r.kind, r.eager) for r in refs]
    assert ("strict", "module", True) in names
    assert ("JSON::PP", "module", True) in names
    assert ("POSIX", "module", True) in names
    assert ("Exporter", "module", True) in names and ("Local::Mixin", "module", True) in names
    assert "Local::Base" not in [n for n, _, _ in names]  # -norequire
    assert ("Local::Top", "module", True) in names
    assert ("helpers.pl", "file", True) in names
    assert ("Data::Dumper", "module", True) in names
    assert ("Compile::Time", "module", True) in names  # in a BEGIN block
    assert ("In::Anon", "module", False) in names  # in a sub's body
    assert ("Digest::SHA", "module", False) in names
    assert ("local.pl", "file", False) in names
    assert (None, "module", False) in names  # require $computed
    for never in ("5.010", "v5", "Not::A::Module", "Also::Not::Code", "After::End"):
        assert never not in [n for n, _, _ in names], never
    (lib,) = [r for r in refs if r.kind == "lib"]
    assert lib.extra == ("\0script-dir\0/lib", "/opt/perl5")
    assert [r.line for r in refs if r.name == "JSON::PP"] == [6]


def test_inc_is_read_from_perl_and_libperl(elfroot: ElfRoot) -> None:
    """@INC as compiled into the binaries (the host's perl: its dirs are the
    strings that exist in the root, none of what is not)."""
    elfroot.glibc_base()
    perl = subprocess.run(
        ["perl", "-e", "print join(qq{\\n}, @INC)"], capture_output=True, text=True, check=True
    )
    host_inc = [d for d in perl.stdout.splitlines() if d.startswith("/")]
    for directory in host_inc:
        elfroot.mkdir(directory)
    elfroot.copy_in("/usr/bin/perl", "/usr/bin/perl")
    for line in subprocess.run(
        ["ldd", "/usr/bin/perl"], capture_output=True, text=True
    ).stdout.split("\n"):
        if "libperl" in line:
            library = line.split("=>")[1].split()[0]
            elfroot.copy_in(library, library)
    elfroot.mkdir("/usr/share/not-perl-at-all")
    inc = perl_inc(RootFS(elfroot.path), ["/usr/bin/perl"], {"PERL5LIB": "/opt/lib:/srv/x"})
    elfroot.mkdir("/opt/lib")
    assert set(host_inc) <= set(inc)
    inc = perl_inc(RootFS(elfroot.path), ["/usr/bin/perl"], {"PERL5LIB": "/opt/lib:/srv/x"})
    assert inc[0] == "/opt/lib" and "/srv/x" not in inc


def test_modules_with_their_xs_parts_and_use_lib(elfroot: ElfRoot) -> None:
    elfroot.write("/usr/share/perl/5.36/JSON/PP.pm", "1;")
    elfroot.write("/usr/lib/x86_64-linux-gnu/perl/5.36/POSIX.pm", "1;")
    elfroot.write("/usr/lib/x86_64-linux-gnu/perl/5.36/auto/POSIX/POSIX.so", b"\x7fELF")
    elfroot.write("/usr/share/perl/5.36/lib.pm", "1;")
    elfroot.write("/srv/cgi/lib/Local/Top.pm", "1;")
    elfroot.write("/srv/cgi/helpers.pl", "1;")
    inc = ("/usr/lib/x86_64-linux-gnu/perl/5.36", "/usr/share/perl/5.36")
    resolver = PerlResolver(RootFS(elfroot.path), inc, workdir="/")
    refs = {r.name: r for r in parse_perl(CGI)}
    cgi = "/srv/cgi/info.pl"
    assert resolver.resolve(refs["JSON::PP"], cgi) == ["/usr/share/perl/5.36/JSON/PP.pm"]
    assert resolver.resolve(refs["POSIX"], cgi) == [
        "/usr/lib/x86_64-linux-gnu/perl/5.36/POSIX.pm",
        "/usr/lib/x86_64-linux-gnu/perl/5.36/auto/POSIX/POSIX.so",
    ]
    assert resolver.resolve(refs["Local::Top"], cgi) is None  # before use lib
    assert resolver.resolve(refs["lib"], cgi) == ["/usr/share/perl/5.36/lib.pm"]
    assert resolver.resolve(refs["Local::Top"], cgi) == ["/srv/cgi/lib/Local/Top.pm"]
    assert resolver.resolve(refs["helpers.pl"], cgi) is None  # "." is not in @INC
    assert resolver.resolve(refs["Digest::SHA"], cgi) is None
