"""Node's closure on plain directories: the tokenizer finds requires and
imports only where they are code; resolution is Node's, with the host's
node (createRequire(file).resolve) as the oracle."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from slimmer.closure.common import Ref
from slimmer.closure.node import NodeResolver, parse_node
from slimmer.closure.paths import node_globals
from slimmer.rootfs import RootFS
from tests.helpers.elfroot import ElfRoot

SOURCE = rb"""#!/usr/bin/env node
'use strict';
const http = require('http');
const fs = require("node:fs");
import express from "express";
import { a, b } from './lib/ab.mjs';
import './side-effect.js';
export * from "./reexported";
export { c } from '@scope/pkg/feature/c';
const path = require.resolve('leftpad');
// require('commented')
/* require("block-commented") */
const s = "require('in-a-string')";
const t = `require('in-a-template') ${ require('in-a-substitution') } done`;
const re = /require\('in-a-regex'\)/g;
const ratio = a / b / 2; require('after-a-division');
function route(name) {
  const greet = require('./lib/greet');
  const lazy = await import('lazy-esm');
  const computed = require(name);
  const templated = require(`./lib/${name}`);
  return obj.require('a-method');
}
"""


def names(refs: list[Ref]) -> list[tuple[str | None, bool]]:
    return [(ref.name, ref.eager) for ref in refs]


def test_requires_and_imports_where_they_are_code() -> None:
    assert names(parse_node(SOURCE)) == [
        ("http", True),
        ("node:fs", True),
        ("express", True),
        ("./lib/ab.mjs", True),
        ("./side-effect.js", True),
        ("./reexported", True),
        ("@scope/pkg/feature/c", True),
        ("leftpad", True),
        ("in-a-substitution", True),
        ("after-a-division", True),
        ("./lib/greet", False),
        ("lazy-esm", False),
        (None, False),
        (None, False),
    ]
    greet = next(r for r in parse_node(SOURCE) if r.name == "./lib/greet")
    assert greet.line == 18 and greet.text == "const greet = require('./lib/greet');"


@pytest.fixture
def app(elfroot: ElfRoot) -> ElfRoot:
    def package(directory: str, manifest: dict[str, object], *files: str) -> None:
        elfroot.write(f"{directory}/package.json", json.dumps(manifest))
        for name in files:
            elfroot.write(f"{directory}/{name}", "module.exports = 1;\n")

    elfroot.write("/srv/app/app.js", "")
    elfroot.write("/srv/app/lib/greet.js", "")
    elfroot.write("/srv/app/lib/data.json", "{}")
    package("/srv/app", {"name": "app", "imports": {"#db": "./lib/greet.js"}})
    package("/srv/app/node_modules/leftpad", {"main": "lib/index.js"}, "lib/index.js")
    package("/srv/app/node_modules/dirpkg", {}, "index.js")
    package(
        "/srv/app/node_modules/@scope/pkg",
        {
            "exports": {
                ".": {"import": "./dist/main.mjs", "require": "./dist/main.cjs"},
                "./feature/*": "./src/features/*.js",
                "./package.json": "./package.json",
            }
        },
        "dist/main.mjs",
        "dist/main.cjs",
        "src/features/c.js",
        "src/private.js",
    )
    package("/srv/node_modules/upper", {"main": "./main"}, "main.js")
    return elfroot


CASES = [
    ("./lib/greet", ["/srv/app/lib/greet.js", "/srv/app/package.json"]),
    ("./lib/data", ["/srv/app/lib/data.json"]),
    (
        "leftpad",
        [
            "/srv/app/node_modules/leftpad/package.json",
            "/srv/app/node_modules/leftpad/lib/index.js",
        ],
    ),
    (
        "dirpkg",
        ["/srv/app/node_modules/dirpkg/package.json", "/srv/app/node_modules/dirpkg/index.js"],
    ),
    (
        "@scope/pkg",
        [
            "/srv/app/node_modules/@scope/pkg/package.json",
            "/srv/app/node_modules/@scope/pkg/dist/main.mjs",
            "/srv/app/node_modules/@scope/pkg/dist/main.cjs",
        ],
    ),
    (
        "@scope/pkg/feature/c",
        [
            "/srv/app/node_modules/@scope/pkg/package.json",
            "/srv/app/node_modules/@scope/pkg/src/features/c.js",
        ],
    ),
    ("upper", ["/srv/node_modules/upper/package.json", "/srv/node_modules/upper/main.js"]),
    ("#db", ["/srv/app/lib/greet.js", "/srv/app/package.json"]),
]


@pytest.mark.parametrize(("name", "expected"), CASES)
def test_node_resolution(app: ElfRoot, name: str, expected: list[str]) -> None:
    resolver = NodeResolver(RootFS(app.path), ())
    assert resolver.resolve(Ref(1, "", name), "/srv/app/app.js") == expected


def test_not_exported_builtin_and_missing(app: ElfRoot) -> None:
    resolver = NodeResolver(RootFS(app.path), ())
    assert resolver.resolve(Ref(1, "", "@scope/pkg/src/private.js"), "/srv/app/app.js") is None
    assert resolver.resolve(Ref(1, "", "fs/promises"), "/srv/app/app.js") == []
    assert resolver.resolve(Ref(1, "", "node:test"), "/srv/app/app.js") == []
    assert resolver.resolve(Ref(1, "", "nowhere"), "/srv/app/app.js") is None


@pytest.mark.skipif(shutil.which("node") is None, reason="the oracle needs node")
def test_the_file_node_loads_is_among_ours(app: ElfRoot) -> None:
    """For each name, the file the host's node resolves (from a module at
    the same place in the tree) is one slim keeps."""
    requester = str(app.path) + "/srv/app/app.js"
    script = (
        "const {createRequire} = require('module');\n"
        f"const r = createRequire({json.dumps(requester)});\n"
        f"const names = {json.dumps([n for n, _ in CASES])};\n"
        "console.log(JSON.stringify(names.map(n => r.resolve(n))));\n"
    )
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
    for (name, ours), theirs in zip(CASES, json.loads(result.stdout), strict=True):
        assert theirs.removeprefix(str(app.path)) in ours, name


def test_global_folders_of_debians_node(elfroot: ElfRoot) -> None:
    """Debian builds node with node_relative_path: its globals are
    /usr/lib/<triplet>/nodejs and /usr/share/nodejs, read from libnode."""
    elfroot.glibc_base()
    elfroot.mkdir("/usr/share/nodejs/ms")
    elfroot.mkdir("/usr/lib/x86_64-linux-gnu/nodejs")
    elfroot.mkdir("/root/.node_modules")
    libnode = elfroot.lib("libnode.so.108", "/usr/lib/x86_64-linux-gnu")
    with open(libnode, "ab") as handle:
        handle.write(b'"node_relative_path": "lib/x86_64-linux-gnu/nodejs:share/nodejs",')
    elfroot.exe("/usr/bin/node", needed=("libnode.so.108",))
    found = node_globals(RootFS(elfroot.path), ["/usr/bin/node"], {"HOME": "/root"})
    assert found == ("/root/.node_modules", "/usr/lib/x86_64-linux-gnu/nodejs", "/usr/share/nodejs")
