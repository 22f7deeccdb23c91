// The 32-bit MicroPython (WebAssembly, under Node.js) run like the Unix port's `micropython`.
//
//   node tools/wasm/run.mjs [-X heapsize=N] [--tree DIR]... script.py [args...]
//
// MicroPython here sees only an in-memory file system (no host files, no sockets), so before
// the script runs the runner copies host folders into it at their own absolute paths: every
// entry of MICROPYPATH (the device path of tools/mpenv.py), the script's folder, each --tree
// and every folder named by an MPTEST_* environment variable (e.g. the .mpy build). sys.path
// is then MICROPYPATH with the script's folder first, as the Unix port sets it, and last
// tools/wasm/absent: importable stand-ins for `socket` and `ssl`, which this runtime lacks
// (every use raises OSError). os.getenv reads this process's environment.
// Exit status as the Unix port's: the SystemExit code, 1 after an uncaught exception (its
// traceback on stderr), 0 otherwise.
//
// This runtime collects garbage only between calls from JavaScript (gc.collect() inside
// Python is deferred until the call returns), so a script that measures the live heap splits
// itself: `import toplevel; toplevel.then(fn, *args)` runs fn(*args) after the script (and
// each earlier fn) has returned and a collection has run. Only this runner has `toplevel`.
//
// WASM_MICROPYTHON: the package's micropython.mjs (default: build/wasm/node_modules/...).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const PACKAGE = "@micropython/micropython-webassembly-pyscript";
const MODULE =
  process.env.WASM_MICROPYTHON ||
  path.join(ROOT, "build", "wasm", "node_modules", ...PACKAGE.split("/"), "micropython.mjs");

function usage(message) {
  process.stderr.write(`run.mjs: ${message}\nusage: node tools/wasm/run.mjs [-X heapsize=N] [--tree DIR]... script.py [args...]\n`);
  process.exit(2);
}

function size(text) {
  const match = /^(\d+)([KM]?)$/i.exec(text);
  if (!match) usage(`heapsize: a number with an optional K or M expected, not ${text}`);
  return Number(match[1]) * { "": 1, K: 1024, M: 1024 * 1024 }[match[2].toUpperCase()];
}

let heapsize = 1024 * 1024; // the Unix port's default
const trees = [];
const argv = process.argv.slice(2);
while (argv.length && argv[0].startsWith("-")) {
  const option = argv.shift();
  if (option === "-X") {
    const value = argv.shift() || "";
    if (!value.startsWith("heapsize=")) usage(`-X ${value}: only heapsize= is supported`);
    heapsize = size(value.slice("heapsize=".length));
  } else if (option === "--tree") {
    trees.push(path.resolve(argv.shift() || usage("--tree needs a folder")));
  } else {
    usage(`unknown option ${option}`);
  }
}
if (!argv.length) usage("a script is needed");
const script = path.resolve(argv[0]);
if (!fs.existsSync(script)) usage(`no such script: ${argv[0]}`);
if (!fs.existsSync(MODULE)) {
  process.stderr.write(`run.mjs: ${MODULE} is missing: run \`make setup\`\n`);
  process.exit(2);
}

const micropypath = (process.env.MICROPYPATH || "").split(":").filter(Boolean);
const ABSENT = path.join(ROOT, "tools", "wasm", "absent");
const folders = [path.dirname(script), ABSENT, ...trees];
for (const entry of micropypath) if (entry !== ".frozen") folders.push(path.resolve(entry));
for (const [name, value] of Object.entries(process.env)) {
  if (!name.startsWith("MPTEST_")) continue;
  for (const part of value.split(":")) {
    if (path.isAbsolute(part) && fs.existsSync(part) && fs.statSync(part).isDirectory()) folders.push(part);
  }
}

// Output goes straight to the file descriptors, in chunks, so nothing is lost at exit.
function sink(fd) {
  let pending = [];
  const flush = () => {
    if (pending.length) fs.writeSync(fd, Buffer.from(pending));
    pending = [];
  };
  const put = (bytes) => {
    for (const byte of bytes) pending.push(byte);
    if (pending.length > 4096 || bytes.includes(10)) flush();
  };
  return { put, flush };
}
const out = sink(1);
const err = sink(2);

const { loadMicroPython } = await import(pathToFileURL(MODULE).href);
const mp = await loadMicroPython({ heapsize, linebuffer: false, stdout: out.put, stderr: err.put });

function makedirs(dir) {
  let at = "";
  for (const part of dir.split("/").filter(Boolean)) {
    at += "/" + part;
    if (!mp.FS.analyzePath(at).exists) mp.FS.mkdir(at);
  }
}

function copy(host) {
  makedirs(host);
  for (const entry of fs.readdirSync(host, { withFileTypes: true })) {
    if (entry.name === "__pycache__" || entry.name === "node_modules" || entry.name.startsWith(".")) continue;
    const from = path.join(host, entry.name);
    if (entry.isDirectory()) copy(from);
    else if (entry.isFile()) mp.FS.writeFile(from, fs.readFileSync(from));
  }
}
const copied = new Set();
for (const folder of folders) {
  if (copied.has(folder) || !fs.existsSync(folder)) continue;
  copied.add(folder);
  copy(folder);
}
makedirs("/tmp");

const syspath = [path.dirname(script), ...micropypath.map((p) => (p === ".frozen" ? p : path.resolve(p))), ABSENT];
mp.globals.set("_run_env", JSON.stringify(process.env));
mp.globals.set("_run_argv", JSON.stringify(argv.map((a, i) => (i ? a : script))));
mp.globals.set("_run_path", JSON.stringify(syspath));
mp.runPython(`
import json as _json
import os as _os
import sys as _sys

_env = _json.loads(_run_env)
if not hasattr(_os, "getenv"):
    _os.getenv = lambda name, default=None: _env.get(name, default)
_sys.argv[:] = _json.loads(_run_argv)
_sys.path[:] = _json.loads(_run_path)
_run_status = 0
del _json, _run_env, _run_argv, _run_path


class _TopLevel:
    def __init__(self):
        self.queue = []

    def then(self, fn, *args):
        self.queue.append((fn, args))


_toplevel = _sys.modules["toplevel"] = _TopLevel()


def _main():
    with open(_sys.argv[0]) as f:
        code = compile(f.read(), _sys.argv[0], "exec")
    exec(code, {"__name__": "__main__", "__file__": _sys.argv[0]})


def _run_main():
    return _run(_main, ())


def _run_next():
    if not _toplevel.queue:
        return False
    fn, args = _toplevel.queue.pop(0)
    return _run(fn, args)


def _run(fn, args):
    global _run_status
    try:
        fn(*args)
        return True
    except SystemExit as stop:
        _toplevel.queue.clear()  # the process ends here, as the Unix port's would
        code = stop.args[0] if stop.args else 0
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=_sys.stderr)
            code = 1
        _run_status = code
    except BaseException as error:  # what the Unix port does with an uncaught exception
        _toplevel.queue.clear()
        _sys.print_exception(error, _sys.stderr)
        _run_status = 1
    return False
`);
mp.runPython("_run_main()");
const collect = mp.pyimport("gc").collect;
const next = mp.globals.get("_run_next");
do collect(); // takes effect as this call returns: nothing of Python is on the stack then
while (next());
const status = mp.globals.get("_run_status");
out.flush();
err.flush();
process.exit(status & 0xff);
