"""Ruby's and PHP's closures on plain directories."""

from __future__ import annotations

from slimmer.closure.paths import php_include_path, ruby_load_path
from slimmer.closure.php import PhpResolver, parse_php
from slimmer.closure.ruby import RubyResolver, parse_ruby
from slimmer.rootfs import RootFS
from tests.helpers.elfroot import ElfRoot

RUBY = b"""\
require "json"
require 'net/http'
require_relative "lib/helper"
autoload :Later, "later/thing"
load "tasks.rb"
name = "x"
require name
require "plugins/#{name}"

def route
  require "csv"
end

=begin
require "in_a_comment_block"
=end
  # require "commented"
text = <<~DOC
  require "in_a_heredoc"
DOC
__END__
require "after_end"
"""


def test_ruby_statements() -> None:
    refs = [(r.name, r.kind, r.eager) for r in parse_ruby(RUBY)]
    assert ("json", "feature", True) in refs
    assert ("net/http", "feature", True) in refs
    assert ("lib/helper", "relative", True) in refs
    assert ("later/thing", "feature", False) in refs
    assert ("tasks.rb", "file", True) in refs
    assert ("csv", "feature", False) in refs
    assert [n for n, _, _ in refs].count(None) == 2  # require name, an interpolated name
    for never in ("in_a_comment_block", "commented", "in_a_heredoc", "after_end"):
        assert never not in [n for n, _, _ in refs], never


def test_ruby_load_path_and_resolution(elfroot: ElfRoot) -> None:
    elfroot.write("/usr/lib/ruby/3.1.0/json.rb", "")
    elfroot.write("/usr/lib/x86_64-linux-gnu/ruby/3.1.0/json/ext/parser.so", b"\x7fELF")
    elfroot.write("/var/lib/gems/3.1.0/gems/rack-3.0.0/lib/rack.rb", "")
    elfroot.mkdir("/var/lib/gems/3.1.0/specifications")
    elfroot.write("/srv/app/lib/helper.rb", "")
    libruby = "/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1"
    strings = b"\0/usr/lib/ruby/3.1.0\0/usr/lib/x86_64-linux-gnu/ruby/3.1.0\0/var/lib/gems/3.1.0\0"
    elfroot.write(libruby, b"\x7fELF" + strings + b"\0/usr/lib/ruby/missing\0")
    elfroot.write("/usr/bin/ruby", b"#!/bin/false\n")
    fs = RootFS(elfroot.path)
    load_path = ruby_load_path(fs, [libruby], {"RUBYLIB": "/srv/app/lib"})
    assert load_path == (
        "/srv/app/lib",
        "/usr/lib/ruby/3.1.0",
        "/usr/lib/x86_64-linux-gnu/ruby/3.1.0",
        "/var/lib/gems/3.1.0/gems/rack-3.0.0/lib",
    )
    resolver = RubyResolver(fs, load_path, "/srv/app")
    more = b'require "rack"\nrequire "json/ext/parser"\n'
    refs = {r.name: r for r in parse_ruby(more + RUBY)}
    app = "/srv/app/app.rb"
    assert resolver.resolve(refs["json"], app) == ["/usr/lib/ruby/3.1.0/json.rb"]
    assert resolver.resolve(refs["lib/helper"], app) == ["/srv/app/lib/helper.rb"]
    assert resolver.resolve(refs["rack"], app) == [
        "/var/lib/gems/3.1.0/gems/rack-3.0.0/lib/rack.rb"
    ]
    assert resolver.resolve(refs["json/ext/parser"], app) == [
        "/usr/lib/x86_64-linux-gnu/ruby/3.1.0/json/ext/parser.so"
    ]
    assert resolver.resolve(refs["net/http"], app) is None


PHP = b"""\
<html><?php include 'not/in/html.php' ?>
<?php
// include 'commented.php';
# require 'hashed.php';
/* require 'blocked.php'; */
require_once __DIR__ . '/lib/db.php';
include_once(dirname(__FILE__) . "/lib/view.php");
require 'config.php';
include "templates/$name.php";
$s = "include 'in_a_string.php'";
$loader->require('method.php');
function page() {
    include 'lazy.php';
}
echo <<<EOT
require 'in_a_heredoc.php';
EOT;
?>
<p>require 'in_html.php';</p>
"""


def test_php_statements() -> None:
    refs = [(r.name, r.eager) for r in parse_php(PHP)]
    assert refs == [
        ("not/in/html.php", True),
        ("\0dir\0/lib/db.php", True),
        ("\0dir\0/lib/view.php", True),
        ("config.php", True),
        (None, True),
        ("lazy.php", False),
    ]
    assert [r.line for r in parse_php(PHP)][:2] == [1, 6]


def test_php_resolution(elfroot: ElfRoot) -> None:
    elfroot.write("/var/www/site/lib/db.php", "")
    elfroot.write("/usr/share/php/config.php", "")
    elfroot.write("/var/www/site/lazy.php", "")
    elfroot.write("/etc/php/8.2/cli/php.ini", 'include_path = ".:/usr/share/php:/opt/php"\n')
    elfroot.mkdir("/opt/php")
    fs = RootFS(elfroot.path)
    include_path = php_include_path(fs)
    assert include_path == (".", "/usr/share/php", "/opt/php")
    resolver = PhpResolver(fs, include_path, workdir="/")
    refs = {r.name: r for r in parse_php(PHP)}
    page = "/var/www/site/index.php"
    assert resolver.resolve(refs["\0dir\0/lib/db.php"], page) == ["/var/www/site/lib/db.php"]
    assert resolver.resolve(refs["config.php"], page) == ["/usr/share/php/config.php"]
    assert resolver.resolve(refs["lazy.php"], page) == ["/var/www/site/lazy.php"]
    assert resolver.resolve(refs["\0dir\0/lib/view.php"], page) is None
