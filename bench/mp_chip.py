# bench/mp_chip.py: the firmware's heap as the chip counts it (run by bench/chip.py). MIT licence.
"""Usage (the paths come from bench/chip.py):
    run.mjs     bench/mp_chip.py boot JOBS        # 32-bit: .mpy from MPTEST_CHIP_PATH
    micropython bench/mp_chip.py boot JOBS IMAGE  # Unix port: the library in a ROMFS image
    run.mjs     bench/mp_chip.py imports MODULE...  # marginal import cost of each module

`boot`: main.py runs in the device folder MPTEST_CHIP_ROOT (main.py, config.json, certificates) up to
the point where the engine would start its loop, with the real transport (jobs.mqtt over
umqtt.simple) behind the stand-in socket and TLS of bench/mp_wire.py. umqtt.simple and the
stand-ins are imported before the baseline, as frozen or built-in modules would be. Then the
engine connects to the in-process broker and runs JOBS jobs (real operations), and one job
whose document is 7.8 KB (the largest whose message fits the 8 KiB buffer).

Each step runs as its own top-level call (`phases`): the wasm32 runtime collects garbage only
there. Prints `@@bench key value` lines (bytes); exit status 0 only when everything completed.
"""

import gc
import os
import sys

# -- phases: a collection before each; on wasm32 each is its own call from JavaScript --------
try:
    import toplevel  # the wasm32 runner's (tools/wasm/run.mjs)

    then = toplevel.then
    _queue = None
except ImportError:  # the Unix port collects anywhere: run them in turn after this script
    _queue = []

    def then(fn, *args):
        _queue.append((fn, args))


def run_phases():
    while _queue:
        fn, args = _queue.pop(0)
        gc.collect()
        fn(*args)


def report(key, value):
    print("@@bench", key, value)


PAD = "x" * 7800
BIG = {"operation": "bench.big", "pad": PAD}
DOCS = (
    {"operation": "gpio.write", "pin": "LED", "value": 1},
    {"operation": "gpio.write", "pin": "LED", "value": 0},
    {"operation": "diag.echo", "message": "hello"},
    {"operation": "gpio.write", "pin": 6, "value": 1},  # REJECTED: a flash pin
    {"operation": "selfDestruct"},  # REJECTED: unsupported
)
S = {}  # what the phases share


def _path():
    entries = [p for p in os.getenv("MPTEST_CHIP_PATH").split(":") if p]
    sys.path[:] = ["", ".frozen"] + entries  # as on the ESP32: '' (the root, the cwd) first


# -- boot ----------------------------------------------------------------------------------
def boot(jobs, image=None):
    if image:
        import vfs

        with open(image, "rb") as f:
            S["image"] = f.read()
        vfs.mount(vfs.VfsRom(S["image"]), "/rom")
        report("image_bytes", len(S["image"]))
    from mp_wire import install  # from this script's folder, before the device's path is set

    S["wire"] = install(None)
    _path()
    import umqtt.simple  # noqa: F401  frozen into the ESP32 firmware

    os.chdir(os.getenv("MPTEST_CHIP_ROOT"))
    with open("main.py") as f:
        S["main_source"] = f.read()  # main.py is deployed as source: read before the baseline
    S["jobs"] = jobs
    then(_base)


def _base():
    S["base"] = gc.mem_alloc()
    then(_boot)


def _boot():
    from jobs import engine

    def stop_here(eng):  # main.py's last call: the loop; the figure is taken just before it
        S["engine"] = eng

    engine.Engine.run_forever = stop_here
    glob = {"__name__": "__main__", "__file__": "main.py"}
    exec(compile(S.pop("main_source"), "main.py", "exec"), glob)
    S["main_globals"] = glob  # main.py's module stays alive on the chip
    S["boot_high"] = gc.mem_alloc()
    then(_booted)


def _booted():
    if "engine" not in S:
        raise SystemExit("main.py did not reach the engine's loop")
    live = gc.mem_alloc()
    base = S["base"]
    eng = S["engine"]
    report("boot_heap", live - base)
    report("boot_high", S.pop("boot_high") - base)
    buffers, kept = _held(eng.link)
    report("boot_buffers", buffers)
    report("boot_der_kept", kept)
    names = sorted(n for n in sys.modules if n.startswith("jobs") or n == "board")
    report("boot_modules", ",".join(names))
    S["booted"] = live
    then(_service) if S["jobs"] else then(_done)


def _held(link):
    """(bytes in the link's bytearrays: its buffers, bytes it keeps: certificates and keys)."""
    buffers = kept = 0
    values = [getattr(link, name, None) for name in dir(link)]
    values += list((getattr(link, "ssl_params", None) or {}).values())
    for value in values:
        if isinstance(value, bytearray):
            buffers += len(value)
        elif isinstance(value, bytes) and len(value) > 64:  # not a packet constant
            kept += len(value)
    return buffers, kept


def _done():
    report("completed", 1)


def _service():
    from fakejobs import FakeService
    from jobs import ops

    class Big(ops.Op):  # a custom operation whose document is the 7.8 KB `pad`
        name = "bench.big"
        params = (ops.Param("pad", ops.STR, hi=8000),)

        def run(self, job):
            return {"size": str(len(job.doc["pad"]))}

    ops.register(Big())
    svc = FakeService(S["engine"].cfg["thing_name"])
    svc.keep = 0  # finished executions are dropped: the service's state stays flat
    svc.record = False
    S["wire"].service = svc
    S["service"] = svc
    eng = S["engine"]
    eng.log = eng.client.log = _quiet
    then(_connected)


def _quiet(*args):
    pass


def _connected():
    S["harness"] = gc.mem_alloc() - S["booted"]  # the fake service and the bench operation
    report("harness_heap", S["harness"])
    eng = S["engine"]
    eng.step()  # connect, subscribe, ask start-next: nothing pending
    if not eng.link.connected:
        raise SystemExit("the engine did not connect to the in-process broker")
    then(_job, 1)


def _one_job(eng, svc, wire, job_id, doc):
    done = eng.jobs_ok + eng.jobs_failed
    wire.deliver(svc.create(job_id, doc))
    for _ in range(50):
        eng.step()
        if eng.jobs_ok + eng.jobs_failed > done:
            return
    raise SystemExit("job " + job_id + " did not finish: " + str(svc.status(job_id)))


def _job(i):
    _one_job(S["engine"], S["service"], S["wire"], "job-" + str(i), DOCS[i % len(DOCS)])
    if i == len(DOCS):
        then(_after_warmup)
    then(_job, i + 1) if i < S["jobs"] else then(_steady)


def _after_warmup():  # every kind of document seen once: the operations they use are loaded
    S["warm"] = gc.mem_alloc()


def _steady():
    live = gc.mem_alloc()
    eng = S["engine"]
    report("jobs_done", eng.jobs_ok + eng.jobs_failed)
    report("jobs_ok", eng.jobs_ok)
    # the device's heap: live now less the baseline and the harness (service, bench operation)
    report("steady_heap", live - S["base"] - S["harness"])
    report("warm_heap", S.get("warm", live) - S["base"] - S["harness"])
    S["before_big"] = live
    then(_big_create)


def _big_create():
    eng, svc, wire = S["engine"], S["service"], S["wire"]
    S["big_done"] = eng.jobs_ok + eng.jobs_failed
    S["peak"] = 0
    # the service's record of the job and the notify-next queued "in the network": harness
    wire.deliver(svc.create("big", BIG))
    svc.record = True
    S["trace"] = {}
    S["traced"] = _trace_calls(eng)
    then(_big_step, 0)


def _traced(label, fn):
    """fn, adding what the device allocates inside each call (calls nest: totals overlap)."""

    def call(*args, **kwargs):
        wire = S["wire"]
        before = gc.mem_alloc() - wire.allocated
        try:
            return fn(*args, **kwargs)
        finally:
            trace = S["trace"]
            trace[label] = trace.get(label, 0) + gc.mem_alloc() - wire.allocated - before

    return call


def _trace_calls(eng):
    """Wrap the calls a job goes through (those this version has); (owner, name, original)."""
    from jobs import ops

    c = eng.client
    traced = []
    for owner, name, label in (
        (c, "message", "client.message(scan+record)"),
        (c, "_decode_document", "client._decode_document(json.loads)"),
        (c, "start_next", "client.start_next(all)"),
        (c, "update", "client.update(all)"),
        (eng.link, "publish", "mqtt.publish"),
        (eng.journal, "write", "journal.write"),
        (eng, "_call", "engine._call(op.run)"),
        (ops, "prepare", "ops.prepare"),
        (ops, "validate", "ops.validate"),
        (ops, "normalize", "ops.normalize"),
    ):
        original = getattr(owner, name, None)
        if original is not None:
            traced.append((owner, name, original))
            setattr(owner, name, _traced(label, original))
    return traced


def _queued(wire):
    sock = wire.sock
    return len(sock._out) - sock._pos if sock is not None else 0


def _big_step(k):
    """One engine step of the big job. Nothing is collected inside a step on wasm32, so the
    heap at its end, less what the stand-ins allocated meanwhile, bounds the step's peak."""
    eng, wire = S["engine"], S["wire"]
    start = gc.mem_alloc()
    if k == 0:
        S["record"] = start - S["before_big"] - _queued(wire)
        report("big_service_record", S["record"])
    # the harness's share of the heap now: its state, the job's record, what is still queued
    harness = S["harness"] + S["record"] + _queued(wire)
    allocated = wire.allocated
    eng.step()
    end = gc.mem_alloc()
    device_high = end - (wire.allocated - allocated) - S["base"] - harness
    S["peak"] = max(S["peak"], device_high)
    report("big_step_" + str(k), str(start - S["base"] - harness) + "->" + str(device_high))
    if eng.jobs_ok + eng.jobs_failed > S["big_done"]:
        then(_big_end)
    elif k < 50:
        then(_big_step, k + 1)
    else:
        raise SystemExit("the 7.8 KB job did not finish")


def _big_end():
    svc = S["service"]
    for label, value in sorted(S.pop("trace").items()):
        report("big_alloc " + label, value)
    for owner, name, original in S.pop("traced"):
        setattr(owner, name, original)
    final = [u for u in svc.updates if u[0] == "big"][-1]
    report("big_status", final[1] + ":" + str((final[2] or {}).get("reason", "")).replace(" ", "_"))
    svc.updates = []
    svc.record = False
    report("big_peak", S["peak"])
    then(_after_big)


def _after_big():
    report("after_big", gc.mem_alloc() - S["base"] - S["harness"])
    then(_done)


# -- imports -------------------------------------------------------------------------------
def imports(names):
    from mp_wire import install

    install(None)
    _path()
    import umqtt.simple  # noqa: F401

    then(_import, names, 0, None)


def _import(names, i, before):
    now = gc.mem_alloc()
    if before is not None:
        report("import " + names[i - 1], now - before)
    if i < len(names):
        __import__(names[i])
        then(_import, names, i + 1, now)
    else:
        report("completed", 1)


mode = sys.argv[1]
if mode == "boot":
    boot(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
elif mode == "imports":
    imports(sys.argv[2:])
else:
    raise SystemExit("mode: boot JOBS [IMAGE] | imports MODULE...")
run_phases()
