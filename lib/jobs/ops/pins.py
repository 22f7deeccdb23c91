# jobs.ops.pins: a board's table of pins jobs may touch. MIT licence.
"""Pin allowlist shared by every board (no hardware here).

    TABLE = PinTable({"LED": (4, "out", 0)}, {6: "flash", 0: "strapping"})
    TABLE.resolve("LED") -> (4, "out", 0, "LED"); TABLE.resolve(6) -> ValueError("pin: 6 is a flash pin")
"""

OUT = "out"
IN = "in"


class PinTable:
    """Aliases -> (number, direction, safe level); `reserved` maps numbers to why they are barred."""

    def __init__(self, pins, reserved):
        self.pins = pins
        self.reserved = reserved
        self._by_number = {}
        for alias in pins:
            number, direction, safe = pins[alias]
            if number in reserved:
                raise ValueError("pin table: " + alias + " uses " + reserved[number] + " pin " + str(number))
            if direction not in (OUT, IN) or safe not in (0, 1):
                raise ValueError("pin table: bad entry for " + alias)
            self._by_number[number] = alias

    def resolve(self, ref):
        """(number, direction, safe_level, alias) for an alias or number; ValueError(reason) if barred."""
        if isinstance(ref, str):
            key = ref.strip().upper()
            if key in self.pins:
                number, direction, safe = self.pins[key]
                return number, direction, safe, key
            if not key.isdigit():
                raise ValueError("pin: unknown alias " + ref[:32])
            ref = int(key)
        if isinstance(ref, bool) or not isinstance(ref, int):
            raise ValueError("pin: alias or GPIO number expected")
        if ref in self.reserved:
            raise ValueError("pin: " + str(ref) + " is a " + self.reserved[ref] + " pin, never allowed")
        alias = self._by_number.get(ref)
        if alias is None:
            raise ValueError("pin: " + str(ref) + " is not allowed for jobs on this board")
        number, direction, safe = self.pins[alias]
        return number, direction, safe, alias


def reserved(**groups):
    """{number: kind} from keyword groups, e.g. reserved(flash=range(6, 12), strapping=(0, 2))."""
    out = {}
    for kind in groups:
        for number in groups[kind]:
            out[number] = kind
    return out
