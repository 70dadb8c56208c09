"""The lab's Modbus/TCP server: a pymodbus device that looks like a small plant controller.

Run by :class:`amlhp.lab.benign_services.BenignServices` as a child process
(``python -m amlhp.lab.modbus_server --listen ADDR:PORT ...``) so that the asyncio loop
and pymodbus's logging stay out of the lab's own process and the ProcessGroup can stop it
like any other server. The same device answers on every ``--listen`` address (the benign
poller's ``services`` address and the attack's dedicated ``modbus_victim``); pymodbus
gives each listener its own copy of the registers, so the attack's writes never change
what the benign poller reads (the benign class stays the same whatever the attack does).

Register map (PDU addresses, 0-based; mbpoll's ``-r 1`` is address 0):

* input registers 0-9: temperature x10 (degC), humidity x10 (%), pressure (hPa), flow x100
  (m3/h), power (W), voltage x10 (V), current x100 (A), tank level (%), uptime (h), status
  word; recomputed on every read from the clock and a seeded noise source, so polls see
  slowly drifting plausible values. Registers 10-199 hold a fixed calibration table.
* holding registers 0-249: setpoint x10, fan speed, mode, alarm limits, then a parameter
  table; writable (the poller's setpoint writes, the attack's unauthorised writes).
* coils 0-63 (pumps, valves, relays) and discrete inputs 0-31 (limit switches).

Uses pymodbus's SimDevice data model (pymodbus >= 3.16; the older ``ModbusSlaveContext``
and ``ModbusDeviceContext`` APIs are removed or deprecated).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import signal
import time
from collections.abc import Sequence

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

INPUT_COUNT = 200
HOLDING_COUNT = 250
COILS = 64
DISCRETE_INPUTS = 32
HOLDING_DEFAULTS = [215, 40, 1, 300, 50, 600, 0, 1, 5, 120]


class PlantModel:
    """Sensor values of a small plant: slow daily-ish cycles plus seeded noise."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"{seed}:modbus-plant")
        self.started = time.monotonic()

    def inputs(self) -> list[int]:
        t = time.monotonic() - self.started
        noise = self.rng.gauss
        temp = 21.5 + 1.5 * math.sin(t / 300) + noise(0, 0.1)
        humidity = 45 + 5 * math.sin(t / 420 + 1) + noise(0, 0.3)
        pressure = 1013 + 3 * math.sin(t / 900) + noise(0, 0.2)
        flow = 12.5 + 2 * math.sin(t / 120) + noise(0, 0.2)
        power = 850 + 120 * math.sin(t / 60) + noise(0, 10)
        voltage = 230 + noise(0, 0.8)
        current = power / voltage
        level = 60 + 20 * math.sin(t / 600)
        uptime_h = 1234 + int(t // 3600)
        status = 0x0001 | (0x0004 if level > 75 else 0)
        values = [temp * 10, humidity * 10, pressure, flow * 100, power]
        values += [voltage * 10, current * 100, level, uptime_h, status]
        return [max(0, min(0xFFFF, round(v))) for v in values]


def device(model: PlantModel, seed: int) -> SimDevice:
    """One device id 0 (answers every unit id) with separate coil/input/register blocks."""
    rng = random.Random(f"{seed}:modbus-table")
    calibration = [rng.randrange(0, 4096) for _ in range(INPUT_COUNT - 10)]
    inputs = model.inputs() + calibration
    coils = [i in (0, 2, 8, 16) for i in range(COILS)]
    discrete = [i in (0, 1) for i in range(DISCRETE_INPUTS)]
    holding = HOLDING_DEFAULTS + [rng.randrange(0, 1000) for _ in range(HOLDING_COUNT - 10)]

    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        """Fresh process values for every read of the input registers (function 4)."""
        del address, count, set_values
        if function_code == 4 and start_address == 0 and len(current_registers) >= 10:
            current_registers[0:10] = model.inputs()

    return SimDevice(
        id=0,
        simdata=(
            [SimData(0, values=coils, datatype=DataType.BITS)],
            [SimData(0, values=discrete, datatype=DataType.BITS)],
            [SimData(0, values=holding, datatype=DataType.REGISTERS)],
            [SimData(0, values=inputs, datatype=DataType.REGISTERS)],
        ),
        action=action,
    )


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(listen: Sequence[tuple[str, int]], seed: int) -> None:
    """Serve one shared device on every address until SIGTERM or SIGINT."""
    model = PlantModel(seed)
    shared = device(model, seed)
    servers = [ModbusTcpServer(shared, address=address) for address in listen]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(server.serve_forever()) for server in servers]
    print(f"modbus server listening on {', '.join(f'{h}:{p}' for h, p in listen)}", flush=True)
    await stop.wait()
    for server in servers:
        await server.shutdown()
    for task in tasks:
        task.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", action="append", required=True, type=parse_listen)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    asyncio.run(serve(args.listen, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
