# The registry, parameter schemas and the AWS document forms (jobs.ops).
from jobs import ops
from mptest import raises
from opstate import fresh_board

_BOARD = []


def _board():
    if not _BOARD:
        _BOARD.append(fresh_board())
    return _BOARD[0]


def _reason(doc, board=None):
    op, _, reason = ops.prepare(doc, board or _board())
    assert (op is None) == (reason is not None), (op, reason)
    return reason


def test_builtins_are_found_by_name():
    for name in ("gpio.write", "gpio.pulse", "gpio.read", "system.reboot", "config.set", "diag.echo"):
        assert ops.find(name).name == name
    for name in ("ota.firmware", "ota.files", "file.download"):
        assert ops.find(name).name == name
    assert ops.find("nope") is None


def test_operations_without_lasting_side_effects_say_they_are_idempotent():
    for name in ("gpio.write", "gpio.read", "diag.echo", "config.set"):
        assert ops.find(name).idempotent is True, name
    for name in ("gpio.pulse", "system.reboot", "ota.firmware", "ota.files", "file.download"):
        assert ops.find(name).idempotent is False, name
    assert ops.Op.idempotent is False  # a user's handler is journaled unless it says otherwise


def test_unknown_operation_is_rejected_with_its_name():
    assert _reason({"operation": "launch.rocket"}) == "unsupported operation launch.rocket"
    assert _reason({"otherInfo": 1}) == "operation missing"
    assert _reason({"operation": 7}) == "operation: string expected"
    assert ops.prepare([1, 2], _board()) == (None, [1, 2], "document is not a JSON object")


def test_parameters_are_checked_by_kind_and_bounds():
    assert _reason({"operation": "gpio.write", "pin": "LED"}) == "value: required"
    assert _reason({"operation": "gpio.write", "pin": "LED", "value": 2}) == "value: at most 1"
    assert _reason({"operation": "gpio.write", "pin": "LED", "value": True}) == "value: integer expected"
    assert _reason({"operation": "gpio.pulse", "pin": "LED", "value": 1, "ms": 600000}) == "ms: at most 60000"
    doc = {"operation": "gpio.write", "pin": "LED", "value": 1, "colour": "red"}
    assert _reason(doc) == "unknown parameter colour"
    doc = {"operation": "ota.firmware", "url": "http://x/y", "sha256": "0" * 64, "size": 1, "version": "2"}
    assert _reason(doc) == "url: https:// URL expected"
    doc["url"] = "https://h/f?X-Amz-Signature=ab&X-Amz-Date=1"
    doc["sha256"] = "xyz"
    assert _reason(doc) == "sha256: 64 hex digits expected"
    doc["sha256"] = "A" * 64
    op, same, reason = ops.prepare(doc, _board())
    assert reason is None and op.name == "ota.firmware" and same is doc


def test_a_url_the_downloader_cannot_parse_is_rejected_before_running():
    doc = {"operation": "file.download", "path": "x.bin", "sha256": "0" * 64}
    assert _reason(dict(doc, url="https://user@host/x")) == "url: bad host in URL"
    assert _reason(dict(doc, url="https://host:80a/x")) == "url: bad port in URL"
    assert _reason(dict(doc, url="https://host/x")) is None


def test_pins_are_checked_against_the_board_passed_in():
    assert _reason({"operation": "gpio.read", "pin": "BUTTON"}) is None
    assert _reason({"operation": "gpio.read", "pin": 6}) == "pin: 6 is a flash pin, never allowed"

    class TwoPins:
        """Another board's table: prepare asks the board it is given, no other."""

        @staticmethod
        def resolve(ref):
            if ref == "LAMP":
                return 13, "out", 0, "LAMP"
            raise ValueError("pin: not on this board")

    assert _reason({"operation": "gpio.write", "pin": "LAMP", "value": 1}, TwoPins) is None
    assert _reason({"operation": "gpio.write", "pin": "LED", "value": 1}, TwoPins) == "pin: not on this board"


def test_aws_reboot_template_maps_to_system_reboot():
    doc = {
        "version": "1.0",
        "steps": [
            {
                "action": {
                    "name": "Reboot",
                    "type": "runHandler",
                    "input": {"handler": "reboot.sh", "path": "${aws:iot:parameter:pathToHandler}"},
                    "runAsUser": "${aws:iot:parameter:runAsUser}",
                }
            }
        ],
    }
    op, converted, reason = ops.prepare(doc, _board())
    assert reason is None and op.name == "system.reboot"
    assert converted == {"operation": "system.reboot"}


def test_aws_old_form_maps_too():
    op, converted, reason = ops.prepare({"operation": "reboot.sh", "args": []}, _board())
    assert (op.name, converted, reason) == ("system.reboot", {"operation": "system.reboot"}, None)
    doc = {"operation": "download-file.sh", "args": ["https://h/f.bin", "data/f.bin", "ab" * 32]}
    op, converted, reason = ops.prepare(doc, _board())
    assert reason is None and op.name == "file.download"
    assert converted == {
        "operation": "file.download",
        "url": "https://h/f.bin",
        "path": "data/f.bin",
        "sha256": "ab" * 32,
    }


def test_aws_download_file_without_sha256_is_rejected():
    doc = {
        "version": "1.0",
        "steps": [
            {
                "action": {
                    "name": "Download-File",
                    "type": "runHandler",
                    "input": {"handler": "download-file.sh", "args": ["https://h/f.bin", "data/f.bin"]},
                }
            }
        ],
    }
    op, converted, reason = ops.prepare(doc, _board())
    assert op is None and reason == "sha256: required", reason
    assert converted["operation"] == "file.download"  # the converted document, also when rejected


def test_other_aws_handlers_are_unsupported():
    for handler in ("install-packages.sh", "start-services.sh"):
        doc = {"version": "1.0", "steps": [{"action": {"type": "runHandler", "input": {"handler": handler}}}]}
        assert _reason(doc) == "unsupported handler " + handler
    doc = {"version": "1.0", "steps": [{"action": {"type": "runCommand", "input": {"command": "ls"}}}]}
    assert _reason(doc) == "unsupported handler runCommand"
    assert (
        _reason({"operation": "remove-packages.sh", "args": ["x"]})
        == "unsupported handler remove-packages.sh"
    )
    two = {"version": "1.0", "steps": [{"action": {}}, {"action": {}}]}
    assert _reason(two) == "unsupported steps: exactly one step is supported"


def test_register_needs_a_name():
    with raises(ValueError):
        ops.register(ops.Op())


class _Unchecked(ops.Op):
    """What a handlers.py might do: a gpio.write without the board's pin rules."""

    name = "gpio.write"
    params = (ops.Param("pin", ops.ANY), ops.Param("value", ops.ANY))

    def run(self, job):
        return {"by": "handler"}


def test_a_builtin_name_is_refused_unless_the_override_is_meant():
    builtin = ops.find("gpio.write")
    with raises(ValueError) as caught:
        ops.register(_Unchecked())
    message = caught.value.args[0]
    assert message == "operation gpio.write is built in; register(op, override=True) replaces it on purpose"
    assert ops.find("gpio.write") is builtin
    assert (
        _reason({"operation": "gpio.write", "pin": 6, "value": 1}) == "pin: 6 is a flash pin, never allowed"
    )
    mine = ops.register(_Unchecked(), override=True)
    try:
        assert ops.find("gpio.write") is mine
        assert _reason({"operation": "gpio.write", "pin": 6, "value": 1}) is None
        ops.find("gpio.pulse")  # the built-in module's other operations load; the override stays
        assert ops.find("gpio.write") is mine
    finally:
        ops.register(builtin, override=True)
    assert ops.find("gpio.write") is builtin


def test_an_override_registered_before_the_builtin_module_loads_stays_when_it_loads():
    import sys

    builtin = ops.find("diag.echo")
    for name in ("system.reboot", "config.set", "diag.echo"):  # as on a fresh boot
        ops._registry.pop(name)
    del sys.modules["jobs.ops.system"]

    class Echo(ops.Op):
        name = "diag.echo"

    mine = ops.register(Echo(), override=True)
    try:
        assert ops.find("config.set").name == "config.set"  # loads jobs.ops.system
        assert ops.find("diag.echo") is mine
    finally:
        ops.register(builtin, override=True)


def test_custom_handler_example_runs_its_document():
    from jobdouble import Job
    from jobs.ops import custom_example  # noqa: F401 - registers customJob

    doc = {"operation": "customJob", "otherInfo": "someValue"}
    op, doc, reason = ops.prepare(doc, _board())
    assert reason is None and op.name == "customJob"
    assert op.run(Job(_board(), doc)) == {"otherInfo": "someValue", "handledBy": "customJob"}
    assert _reason({"operation": "customJob"}) == "otherInfo: required"
    assert _reason({"operation": "customJob", "otherInfo": 5}) == "otherInfo: string expected"


def test_unload_drops_the_heavy_operations_and_find_brings_them_back():
    import sys

    from jobs import ops

    firmware = ops.find("ota.firmware")
    assert "jobs.ops.firmware" in sys.modules and "jobs.ops.transfer" in sys.modules
    ops.find("gpio.write")
    ops.unload()
    for gone in ("jobs.ops.firmware", "jobs.ops.transfer", "jobs.ops.https"):
        assert gone not in sys.modules, gone
    assert "jobs.ops.gpio" in sys.modules  # resident: what most jobs run
    again = ops.find("ota.firmware")
    assert again is not None and again is not firmware and again.name == "ota.firmware"
