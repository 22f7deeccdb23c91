"""The stand-in's Jobs engine: the device API and the control plane over one store.

`device_api.DeviceApi` answers devices (requests on the reserved MQTT topics, timers, the
outbox), `control_api.ControlApi` serves the control plane (things, groups, jobs, executions)
and `ota_api.OtaApi` extends it with streams and OTA updates;
both change state through `core.JobState`. The Jobs service needs only the first and the CLI
only the second; the HTTP endpoint needs both (its `iot-jobs-data` routes are the device API
over HTTPS), and so do `StandIn` and the tests.
"""

from tools.standin.device_api import DeviceApi
from tools.standin.ota_api import OtaApi


class Engine(DeviceApi, OtaApi):
    """Both APIs over one store."""
