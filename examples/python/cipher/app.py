"""The cipher shape in Python (world `acme:cipher/cipher`, in
examples/cipher/wit): a Caesar shift of ASCII letters that writes two
records to its own `audit-log` import per call. Its exports and that import
are `async func`s in the WIT, so they are coroutines here: the component
uses the component model's async ABI.

`SHIFT_AMOUNT` (0 to 25, default 3) comes from the environment and is read
on each call: componentize-py runs this module's top-level code at build
time and snapshots it, so a value read up here would be the build machine's.
"""

import os

import wit_world
from wit_world.imports import audit_log


def shift_amount() -> int:
    raw = os.environ.get("SHIFT_AMOUNT", "3")
    if not raw.isdigit() or int(raw) > 25:
        raise ValueError(f"SHIFT_AMOUNT={raw!r} is not a whole number from 0 to 25")
    return int(raw)


def shift(text: str, by: int) -> str:
    def one(c: str) -> str:
        for base in ("a", "A"):
            if base <= c <= chr(ord(base) + 25):
                return chr((ord(c) - ord(base) + by) % 26 + ord(base))
        return c

    return "".join(one(c) for c in text)


class WitWorld(wit_world.WitWorld):
    async def encr(self, input: str) -> str:
        return await cipher("encr", input, 1)

    async def decr(self, input: str) -> str:
        return await cipher("decr", input, -1)


async def cipher(action: str, input: str, sign: int) -> str:
    by = shift_amount()
    await audit_log.auditrecord(action, f"shift {by}, {len(input)} characters in")
    output = shift(input, sign * by)
    await audit_log.auditrecord(action, f"{len(output)} characters out")
    return output
