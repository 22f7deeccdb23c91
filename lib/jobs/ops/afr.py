# jobs.ops.afr: the AWS IoT OTA job (CreateOTAUpdate's "afr_ota" document). MIT licence.
"""The job `AFR_OTA-<otaUpdateId>` that `aws iot create-ota-update` makes; jobs.afrdoc reads its
document into {"operation": "afr_ota", "protocols", "streamname", "files"}.

Each file's `fileType` says what it is (the OTA agent's file type ids, set per file in
CreateOTAUpdate):
* 0, the firmware image (`filepath` is not used): ota.firmware's machinery (jobs.ops.firmware):
  into the next OTA partition, read back, set_boot(), reboot, self-test, mark-valid or rollback.
  One per update.
* 1, an application file: `filepath` is its path in the application folder (the path rule of
  ota.files: relative, no "..", ...): ota.files's machinery (jobs.ops.files): staged in the
  inactive folder, swapped atomically at the reboot, self-test, commit or rollback.
One update carries the firmware image or application files, not both.

Each file comes over MQTT (the `streamname` stream, `fileid`; jobs.ops.stream) when the
document offers MQTT, else over HTTPS (`update_data_url`, a presigned URL; jobs.ops.transfer).
Its SHA-256 (computed as it is written) must verify against `sig-sha256-ecdsa` with the
provisioned code-signing key (jobs.ops.codesign) before it can boot or be swapped in; the
firmware partition is read back as well, and the image's version (its esp_app_desc_t) must be
newer than the running one unless config `ota_allow_downgrade` is true.

statusDetails are those of AWS's OTA agent: `receive` "<blocks>/<total>" while downloading,
`self_test` "ready" with `updatedBy` (the running version) before the reboot, `self_test`
"active" with `updatedBy` (the new version) in the self-test, and SUCCEEDED `reason`
"accepted v<new>" with `updatedBy` "v<previous>".
"""

from micropython import const

from jobs import ops, store
from jobs.ops import appstore, files, firmware, staging, stream, transfer

FIRMWARE = const(0)  # fileType of the firmware image
APP_FILE = const(1)  # fileType of an application file
DOWNLOAD = "afr.download"  # firmware image: {"slot"} + {"offset"} (HTTPS) or the stream's bitmap
SIG = "sig-sha256-ecdsa"
_APP_DESC_MAGIC = b"\x32\x54\xcd\xab"  # esp_app_desc_t.magic_word 0xABCD5432, little-endian
_APP_DESC = const(32)  # where the app description starts in an ESP32 app image
_SCHEME = "aws.s3.presigned"


def _kind(entry):
    file_type = entry.get("fileType")
    return FIRMWARE if file_type is None else file_type


def version_key(text):
    """The numbers of the first dotted number in `text` ("v1.23.0-preview" -> (1, 23, 0)), or None."""
    i = 0
    while i < len(text) and not text[i].isdigit():
        i += 1
    numbers = []
    while i < len(text) and text[i].isdigit():
        j = i
        while j < len(text) and text[j].isdigit():
            j += 1
        numbers.append(int(text[i:j]))
        if j + 1 < len(text) and text[j] == "." and text[j + 1].isdigit():
            i = j + 1
        else:
            break
    return tuple(numbers) if numbers else None


def app_version(version):
    """`updatedBy` in the self-test as the OTA agent sends it: "0x" + major (8 bits), minor (8
    bits), build (16 bits) in hex, for a version of up to three such numbers; else the text."""
    key = version_key(version or "")
    if key is None or len(key) > 3:
        return str(version)
    major, minor, build = (list(key) + [0, 0])[:3]
    if major > 255 or minor > 255 or build > 0xFFFF:
        return str(version)
    return "0x%02x%02x%04x" % (major, minor, build)


def _v(version):
    version = str(version)
    return "v" + version if version[:1].isdigit() else version


def image_version(slot, buf):
    """The version in the app description of the image in `slot` (esp_app_desc_t: magic word at
    byte 32, version text at 48..80), or None when the image has none."""
    slot.readblocks(0, buf)
    if buf[_APP_DESC : _APP_DESC + 4] != _APP_DESC_MAGIC:
        return None
    text = bytes(buf[_APP_DESC + 16 : _APP_DESC + 48])
    end = text.find(b"\x00")
    try:
        return str(text[: end if end >= 0 else 32], "utf-8") or None
    except UnicodeError:
        return None


def _check_downgrade(job, version, previous):
    """ops.Failed unless `version` may replace `previous`, as the OTA agent decides."""
    if job.config.get("ota_allow_downgrade"):
        return
    new, old = version_key(version), version_key(previous)
    if version == previous or (new is not None and new == old):
        raise ops.Failed("rejected: version " + version + " is already running")
    if new is None or old is None:
        raise ops.Failed("rejected: cannot tell whether " + version + " is newer than " + previous)
    if new < old:
        raise ops.Failed("rejected: version " + version + " is older than the running " + previous
                         + " (config ota_allow_downgrade)")  # fmt: skip


class AfrOta(ops.Op):
    name = "afr_ota"
    # jobs.afrdoc made these (types and bounds checked as it read them): check() judges them
    params = (
        ops.Param("protocols", ops.ANY),
        ops.Param("streamname", ops.ANY, optional=True),
        ops.Param("files", ops.ANY),
    )

    def check(self, doc, board):
        protocols = doc["protocols"]
        if not isinstance(protocols, list) or not protocols:
            return "afr_ota.protocols: required"
        if not isinstance(doc["files"], list) or not doc["files"]:
            return "afr_ota.files: required"
        for p in protocols:
            if p not in ("MQTT", "HTTP"):
                return "afr_ota.protocols: " + str(p)[:16] + " is not served here (MQTT, HTTP)"
        mqtt = "MQTT" in protocols and doc.get("streamname")
        if "MQTT" in protocols and "HTTP" not in protocols and not mqtt:
            return "afr_ota.streamname: required for the MQTT protocol"
        kinds = {}
        total = 0
        seen = {}
        for i, entry in enumerate(doc["files"]):
            where = "afr_ota.files[" + str(i) + "]"
            problem = self._check_file(entry, where, mqtt, board, seen)
            if problem:
                return problem
            kinds[_kind(entry)] = kinds.get(_kind(entry), 0) + 1
            total += entry["filesize"]
        if FIRMWARE in kinds and (kinds[FIRMWARE] > 1 or len(kinds) > 1):
            return "afr_ota.files: one update carries one firmware image (fileType 0) or application files (fileType 1)"
        if FIRMWARE not in kinds and total > files.MAX_TOTAL:
            return "afr_ota.files: " + str(total) + " bytes in all, at most " + str(files.MAX_TOTAL)
        return None

    def _check_file(self, entry, where, mqtt, board, seen):
        for key in ("filesize", "fileid"):
            if key not in entry:
                return where + "." + key + ": required"
        size = entry["filesize"]
        if size < 1:
            return where + ".filesize: at least 1"
        if SIG not in entry:
            other = entry.get("sig_other")
            if other:
                return where + ": " + other + " is not checked here (this device verifies " + SIG + ")"
            return where + ": no " + SIG + " code signature (codeSigning in CreateOTAUpdate)"
        if not mqtt:
            url = entry.get("update_data_url")
            if url is None:
                return where + ".update_data_url: required for the HTTP protocol"
            problem = ops.Param("update_data_url", ops.URL).check(url, board)
            if problem:
                return where + ".update_data_url: " + problem
            scheme = entry.get("auth_scheme")
            if scheme is not None and scheme != _SCHEME:
                return where + ".auth_scheme: " + scheme + " is not served here (" + _SCHEME + ")"
        kind = _kind(entry)
        if kind == FIRMWARE:
            problem = firmware.slot_problem(board, size)
            return where + ": " + problem if problem else None
        if kind != APP_FILE:
            return where + ".fileType: " + str(kind) + " is not served here (0: firmware image, 1: application file)"
        path = entry.get("filepath")
        if not path:
            return where + ".filepath: required for an application file"
        problem = files.check_path(path, where + ".filepath", seen)
        if problem:
            return problem
        if size > files.MAX_FILE_SIZE:
            return where + ".filesize: at most " + str(files.MAX_FILE_SIZE)
        return None

    # -- running ---------------------------------------------------------------------------

    def run(self, job):
        if _kind(job.doc["files"][0]) == FIRMWARE:
            return self._firmware(job, None)
        return self._files(job, None)

    def resume(self, job):
        phase = job.phase
        data = job.data or {}
        if phase == DOWNLOAD:
            return self._firmware(job, data.get("slot"))
        if phase == firmware.BOOT:
            version = data.get("version")
            version, previous = firmware.self_test(job, {"self_test": "active", "updatedBy": app_version(version)})
            return {"reason": "accepted " + _v(version), "updatedBy": _v(previous)}
        if phase == files.STAGE and "stage" in data:
            return self._files(job, data["stage"])
        if phase == files.SWAP and "stage" in data:
            version = data.get("version")
            test = {"self_test": "active", "updatedBy": str(version)}
            version, previous = files.after_swap(job, test, _ready(data.get("previous")))
            return {"reason": "accepted " + _v(version), "updatedBy": _v(previous)}
        return self.run(job)  # reset before our first checkpoint: nothing was written yet

    def _stream(self, job, entry):
        """(stream name, file id) when this file comes over MQTT, else None (HTTPS)."""
        doc = job.doc
        if "MQTT" in doc["protocols"] and doc.get("streamname"):
            return doc["streamname"], entry["fileid"]
        return None

    def _firmware(self, job, slot_label):
        from jobs.ops import codesign

        key = codesign.key(job)
        entry = job.doc["files"][0]
        size = entry["filesize"]
        board = job.board
        slot = board.ota()
        if slot_label is None:
            job.checkpoint(DOWNLOAD, {"slot": firmware.label(slot)})
        elif slot is None or firmware.label(slot) != slot_label:
            raise ops.Failed("OTA partition changed during the download")
        buf = bytearray(transfer.BLOCK)
        source = self._stream(job, entry)
        if source is not None:
            data = {"slot": firmware.label(slot)}
            digest = stream.Download(job, source[0], source[1], size, stream.SlotSink(slot), DOWNLOAD, data).run()
        else:
            offset = (job.data or {}).get("offset", 0) if slot_label is not None else 0
            details = _receive(size)
            hasher = firmware.https_into(job, slot, entry["update_data_url"], size, offset, buf, DOWNLOAD, {}, details)
            digest = hasher.digest()
        try:
            codesign.check(key, digest, entry[SIG])
        except ops.Failed:
            firmware.spoil(slot, buf)
            raise
        firmware.verify(slot, size, digest, buf)
        version = image_version(slot, buf)
        previous = board.firmware_version()
        try:
            if version is None:
                raise ops.Failed("the image has no version (no esp_app_desc_t at byte 32)")
            _check_downgrade(job, version, previous)
        except ops.Failed:
            firmware.spoil(slot, buf)
            raise
        firmware.install(job, slot, version, _ready(app_version(previous)))

    def _files(self, job, name):
        from jobs.ops import codesign

        key = codesign.key(job)
        items = []
        for entry in job.doc["files"]:
            items.append({"path": entry["filepath"], "size": entry["filesize"], "entry": entry})
        if name is None:
            name = files.begin(job, items)

        def check(entry):
            return lambda digest: codesign.check(key, digest, entry[SIG])

        def intact(item, target, buf):
            try:
                codesign.check_file(key, target, item["entry"][SIG], buf)
            except ops.Failed:
                return False  # missing, or not what the update signed
            return True

        session = None
        try:

            def fetch(item, target, buf, data):
                nonlocal session
                entry = item["entry"]
                source = self._stream(job, entry)
                if source is None:
                    if session is None:
                        session = transfer.Session(job)
                    return staging.fetch_file(session, target, entry["update_data_url"], check(entry), item["size"], buf)
                return _stream_file(job, source, item, target, data, check(entry))

            files.stage(job, name, items, fetch, intact)
        finally:
            if session is not None:
                session.close()
        previous = appstore.version(job.board.root)
        files.swap(job, name, job.id, _ready(previous))


def _ready(previous):
    """statusDetails before the reboot into what was installed: the OTA agent's self_test ready."""
    return {"self_test": "ready", "updatedBy": str(previous)}


def _receive(size):
    blocks = (size + transfer.BLOCK - 1) // transfer.BLOCK

    def details(end):
        return {"receive": str((end + transfer.BLOCK - 1) // transfer.BLOCK) + "/" + str(blocks)}

    return details


def _stream_file(job, source, item, target, data, check):
    """One application file over the stream into <target>.part (resumed when the journal names
    it), signature-checked; the .part path."""
    part = target + ".part"
    d = job.data or {}
    resume = job.phase == files.STAGE and d.get("stream") == source[0] and d.get("file") == source[1]
    sink = stream.FileSink(part, resume)
    try:
        try:
            digest = stream.Download(job, source[0], source[1], item["size"], sink, files.STAGE, data).run()
        finally:
            sink.close()
        check(digest)
    except Exception:  # a reset (SystemExit on unix, power loss) keeps the .part to resume
        store.remove(part)
        raise
    return part


OPS = (AfrOta(),)
