# The registry, parameter schemas and the AWS document forms (jobs.ops).
from jobs import ops
from mptest import raises
from opstate import fresh_board


def test_builtins_are_found_by_name():
    for name in ("gpio.write", "gpio.pulse", "gpio.read", "system.reboot", "config.set", "diag.echo"):
        assert ops.find(name).name == name
    for name in ("ota.firmware", "ota.files", "file.download"):
        assert ops.find(name).name == name
    assert ops.find("nope") is None


def test_unknown_operation_is_rejected_with_its_name():
    assert ops.validate({"operation": "launch.rocket"}) == (None, "unsupported operation launch.rocket")
    assert ops.validate({"otherInfo": 1}) == (None, "operation missing")
    assert ops.validate([1, 2]) == (None, "document is not a JSON object")


def test_parameters_are_checked_by_kind_and_bounds():
    b = fresh_board()
    assert ops.validate({"operation": "gpio.write", "pin": "LED"}, b) == (None, "value: required")
    assert ops.validate({"operation": "gpio.write", "pin": "LED", "value": 2}, b) == (
        None,
        "value: at most 1",
    )
    assert (
        ops.validate({"operation": "gpio.write", "pin": "LED", "value": True}, b)[1]
        == "value: integer expected"
    )
    doc = {"operation": "gpio.pulse", "pin": "LED", "value": 1, "ms": 600000}
    assert ops.validate(doc, b) == (None, "ms: at most 60000")
    doc = {"operation": "gpio.write", "pin": "LED", "value": 1, "colour": "red"}
    assert ops.validate(doc, b) == (None, "unknown parameter colour")
    doc = {"operation": "ota.firmware", "url": "http://x/y", "sha256": "0" * 64, "size": 1, "version": "2"}
    assert ops.validate(doc, b) == (None, "url: https:// URL expected")
    doc["url"] = "https://h/f?X-Amz-Signature=ab&X-Amz-Date=1"
    doc["sha256"] = "xyz"
    assert ops.validate(doc, b) == (None, "sha256: 64 hex digits expected")
    doc["sha256"] = "A" * 64
    op, reason = ops.validate(doc, b)
    assert reason is None and op.name == "ota.firmware"


def test_validate_without_a_board_uses_the_deployed_boards_table():
    op, reason = ops.validate({"operation": "gpio.read", "pin": "BUTTON"})
    assert reason is None and op.name == "gpio.read"
    assert ops.validate({"operation": "gpio.read", "pin": 6}) == (
        None,
        "pin: 6 is a flash pin, never allowed",
    )


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
    assert ops.normalize(doc) == {"operation": "system.reboot"}
    op, reason = ops.validate(doc)
    assert reason is None and op.name == "system.reboot"


def test_aws_old_form_maps_too():
    assert ops.normalize({"operation": "reboot.sh", "args": []}) == {"operation": "system.reboot"}
    doc = {"operation": "download-file.sh", "args": ["https://h/f.bin", "data/f.bin", "ab" * 32]}
    assert ops.normalize(doc) == {
        "operation": "file.download",
        "url": "https://h/f.bin",
        "path": "data/f.bin",
        "sha256": "ab" * 32,
    }
    assert ops.validate(doc)[1] is None


def test_aws_download_file_without_sha256_is_rejected():
    doc = {
        "version": "1.0",
        "steps": [
            {
                "action": {
                    "name": "Download-File",
                    "type": "runHandler",
                    "input": {"handler": "download-file.sh", "args": ["https://h/f.bin", "/data/f.bin"]},
                }
            }
        ],
    }
    assert ops.normalize(doc)["operation"] == "file.download"
    op, reason = ops.validate(doc)
    assert op is None and reason.startswith("sha256: required"), reason


def test_other_aws_handlers_are_unsupported():
    for handler in ("install-packages.sh", "start-services.sh"):
        doc = {"version": "1.0", "steps": [{"action": {"type": "runHandler", "input": {"handler": handler}}}]}
        assert ops.validate(doc) == (None, "unsupported handler " + handler)
    doc = {"version": "1.0", "steps": [{"action": {"type": "runCommand", "input": {"command": "ls"}}}]}
    assert ops.validate(doc) == (None, "unsupported handler runCommand")
    assert ops.validate({"operation": "remove-packages.sh", "args": ["x"]}) == (
        None,
        "unsupported handler remove-packages.sh",
    )
    two = {"version": "1.0", "steps": [{"action": {}}, {"action": {}}]}
    assert ops.validate(two)[1] == "unsupported steps: exactly one step is supported"


def test_our_documents_pass_normalize_unchanged():
    doc = {"operation": "gpio.read", "pin": "LED"}
    assert ops.normalize(doc) is doc


def test_register_needs_a_name():
    with raises(ValueError):
        ops.register(ops.Op())


def test_custom_handler_example_runs_the_seed_document():
    from jobdouble import Job
    from jobs.ops import custom_example  # noqa: F401 - registers customJob

    doc = {"operation": "customJob", "otherInfo": "someValue"}
    op, reason = ops.validate(doc)
    assert reason is None and op.name == "customJob"
    assert op.run(Job(fresh_board(), doc)) == {"otherInfo": "someValue", "handledBy": "customJob"}
    assert ops.validate({"operation": "customJob"}) == (None, "otherInfo: required")
    assert ops.validate({"operation": "customJob", "otherInfo": 5})[1] == "otherInfo: string expected"
