"""AWS managed job templates (AWS-Reboot, AWS-Download-File, ...), `${aws:iot:parameter:...}` filled in."""

import json
import re

_ARN = re.compile(r"arn:aws:iot:[a-z0-9-]*::jobtemplate/(AWS-[A-Za-z-]+):([0-9.]+)\Z")
_PLACEHOLDER = re.compile(r"\$\{aws:iot:parameter:([a-zA-Z0-9_-]+)\}")
_KEY = re.compile(r"[a-zA-Z0-9_-]{1,128}\Z")
VERSION = "1.0"


class TemplateError(Exception):
    def __init__(self, error_type: str, message: str, status: int = 400):
        super().__init__(message)
        self.error_type, self.status = error_type, status


def _handler_step(name: str, handler: str, args: list[str]) -> dict:
    action = {
        "name": name,
        "type": "runHandler",
        "input": {"handler": handler, "path": "${aws:iot:parameter:pathToHandler}"},
        "runAsUser": "${aws:iot:parameter:runAsUser}",
    }
    if args:
        action["input"]["args"] = ["${aws:iot:parameter:" + a + "}" for a in args]
    return {"version": "1.0", "steps": [{"action": action}]}


# name -> (document, required parameters)
MANAGED = {
    "AWS-Reboot": (_handler_step("Reboot", "reboot.sh", []), ()),
    "AWS-Download-File": (
        _handler_step("Download-File", "download-file.sh", ["downloadUrl", "filePath"]),
        ("downloadUrl", "filePath"),
    ),
    "AWS-Install-Application": (
        _handler_step("Install-Application", "install-packages.sh", ["packages"]),
        ("packages",),
    ),
    "AWS-Remove-Application": (
        _handler_step("Remove-Application", "remove-packages.sh", ["packages"]),
        ("packages",),
    ),
    "AWS-Start-Application": (
        _handler_step("Start-Application", "start-services.sh", ["services"]),
        ("services",),
    ),
    "AWS-Stop-Application": (
        _handler_step("Stop-Application", "stop-services.sh", ["services"]),
        ("services",),
    ),
    "AWS-Restart-Application": (
        _handler_step("Restart-Application", "restart-services.sh", ["services"]),
        ("services",),
    ),
    "AWS-Run-Command": (
        {
            "version": "1.0",
            "steps": [
                {
                    "action": {
                        "name": "Run-Command",
                        "type": "runCommand",
                        "input": {"command": "${aws:iot:parameter:command}"},
                        "runAsUser": "${aws:iot:parameter:runAsUser}",
                    }
                }
            ],
        },
        ("command",),
    ),
}
OPTIONAL = ("runAsUser", "pathToHandler")


def _lookup(arn: str):
    match = _ARN.match(arn or "")
    if not match or match.group(1) not in MANAGED or match.group(2) != VERSION:
        raise TemplateError("ResourceNotFoundException", f"Job template {arn} cannot be found.", 404)
    return MANAGED[match.group(1)]


def raw(arn: str) -> str:
    """The template document before substitution."""
    return json.dumps(_lookup(arn)[0], separators=(",", ":"))


def render(arn: str, parameters: dict) -> str:
    """The document with every parameter substituted (optional ones absent -> empty string)."""
    document, required = _lookup(arn)
    if not isinstance(parameters, dict):
        raise TemplateError("InvalidRequestException", "documentParameters must be a map")
    allowed = set(required) | set(OPTIONAL)
    for key, value in parameters.items():
        if not _KEY.match(key) or key not in allowed:
            raise TemplateError(
                "InvalidRequestException",
                f"documentParameters key {key!r} is not a parameter of this template "
                f"(allowed: {', '.join(sorted(allowed))})",
            )
        if not isinstance(value, str) or not 1 <= len(value) <= 30720:
            raise TemplateError(
                "InvalidRequestException", f"documentParameters value of {key!r} must be 1-30720 chars"
            )
    missing = [k for k in required if k not in parameters]
    if missing:
        raise TemplateError("InvalidRequestException", f"missing documentParameters: {', '.join(missing)}")
    text = json.dumps(document, separators=(",", ":"))
    return _PLACEHOLDER.sub(lambda m: json.dumps(parameters.get(m.group(1), ""))[1:-1], text)


_DESCRIPTIONS = {
    "downloadUrl": "URL of the file to download",
    "filePath": "where on the device to store the downloaded file",
    "packages": "space-separated list of packages",
    "services": "space-separated list of services",
    "command": "comma-separated command line to run",
    "runAsUser": "user the handler runs as",
    "pathToHandler": "folder of the handler scripts",
}


def _summary(name: str, region: str) -> dict:
    return {
        "templateArn": f"arn:aws:iot:{region}::jobtemplate/{name}:{VERSION}",
        "templateName": name,
        "description": f"AWS managed job template {name}",
        "environments": ["LINUX"],
        "templateVersion": VERSION,
    }


def list_managed(region: str) -> dict:
    """ListManagedJobTemplates."""
    return {"managedJobTemplates": [_summary(name, region) for name in MANAGED]}


def describe_managed(name: str, version: str | None, region: str) -> dict:
    """DescribeManagedJobTemplate."""
    if name not in MANAGED or (version is not None and version != VERSION):
        raise TemplateError("ResourceNotFoundException", f"Managed job template {name} cannot be found.", 404)
    document, required = MANAGED[name]
    parameters = [
        {
            "key": key,
            "description": _DESCRIPTIONS[key],
            "regex": "^.{1,30720}$",
            "optional": key not in required,
        }
        for key in (*required, *OPTIONAL)
    ]
    summary = _summary(name, region)
    return {
        **summary,
        "documentParameters": parameters,
        "document": json.dumps(document, separators=(",", ":")),
    }
