#!/usr/bin/python3
"""A pymodbus 3.0.0 slave for the modbus adapter's tests.

    /usr/bin/python3 slave.py tcp 127.0.0.1 15020 [--units 1,2,3]
    /usr/bin/python3 slave.py rtu /path/to/ttyB 19200 [--units 1,2,3]
    /usr/bin/python3 slave.py ascii /path/to/ttyB 9600

Without --units every unit id answers from one context (single=True);
with it only the listed ids answer (single=False) and others are ignored,
so a request to them times out, like a dead slave on a real line.

The register image is packed here with Python's struct module, independently
of the Go code under test; FIXTURE lists what the Go tests expect to decode.
Every write is printed as "WRITE <table> <address> <values>" so that tests
can check what landed in the slave. Prints READY when serving.
"""
import asyncio
import logging
import struct
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext, ModbusSparseDataBlock)
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer
from pymodbus.transaction import ModbusAsciiFramer, ModbusRtuFramer, ModbusSocketFramer

HR_SIZE = 200       # holding 0..199; 200 and up -> exception 02
POISON = 199        # reading holding 199 -> exception 04 (slave device failure)

# (address, struct format, order, value). Orders name the byte layout of the
# value's big-endian bytes "ABCD...": CDAB swaps words, BADC swaps bytes
# within words, DCBA reverses all.
FIXTURE = [
    (0, ">h", "ABCD", -1234),
    (1, ">H", "ABCD", 54321),
    (2, ">h", "BADC", -2),
    (3, ">i", "ABCD", -123456789),
    (5, ">i", "CDAB", -123456789),
    (7, ">I", "BADC", 3000000000),
    (9, ">I", "DCBA", 3000000000),
    (11, ">f", "ABCD", 229.8),
    (13, ">f", "CDAB", 229.8),
    (15, ">f", "BADC", -0.5),
    (17, ">f", "DCBA", 1.5e6),
    (19, ">q", "ABCD", -9000000000000),
    (23, ">Q", "CDAB", 18000000000000000000),
    (27, ">d", "ABCD", 3.14159265358979),
    (31, ">d", "DCBA", -2.5e-3),
    (35, ">q", "BADC", 1234567890123),
]
STRINGS = [(40, "ABCD", b"OUTPOST-1\0"), (45, "BADC", b"ABCDEFG\0")]
EXTRA = {
    50: 0b1010000000001001,  # bits 0, 3, 13, 15 set
    51: 2153,                # scale 0.1 -> 215.3
    52: 6512,                # scale 0.01, offset -40 -> 25.12
    60: 0,                   # 60..69 are unit*100+i (set per unit below)
    100: 215,                # writable int16 setpoint (scale 0.1 -> 21.5)
    103: 0b0000000000000100, # writable bit 2
}


def layout(raw, order):
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [struct.unpack(">H", w)[0] for w in words]


def holding(unit):
    hr = [0] * HR_SIZE
    for addr, fmt, order, value in FIXTURE:
        for i, w in enumerate(layout(struct.pack(fmt, value), order)):
            hr[addr + i] = w
    for addr, order, raw in STRINGS:
        for i, w in enumerate(layout(raw, order)):
            hr[addr + i] = w
    for addr, w in EXTRA.items():
        hr[addr] = w
    for i in range(10):
        hr[60 + i] = unit * 100 + i
    return hr


class RecordingBlock(ModbusSequentialDataBlock):
    """Logs every write; fails reads that touch the poison register."""

    def __init__(self, name, address, values, poison=None):
        super().__init__(address, values)
        self.name, self.poison = name, poison

    def getValues(self, address, count=1):
        if self.poison is not None and address <= self.poison < address + count:
            raise ValueError("poison register")
        return super().getValues(address, count)

    def setValues(self, address, values):
        if not isinstance(values, list):
            values = [values]
        print(f"WRITE {self.name} {address} {[int(v) for v in values]}", flush=True)
        super().setValues(address, values)


def make_slave(unit):
    # Input registers have a hole at 10..19: a read across it is exception 02.
    ir = {a: 11 * (a + 1) for a in list(range(0, 10)) + list(range(20, 30))}
    return ModbusSlaveContext(
        di=RecordingBlock("di", 0, [0, 1, 0, 1, 1, 0, 0, 1] + [0] * 92),
        co=RecordingBlock("co", 0, [1, 0, 1, 1, 0, 0, 0, 1] + [0] * 92),
        hr=RecordingBlock("hr", 0, holding(unit), poison=POISON),
        ir=ModbusSparseDataBlock(ir),
        zero_mode=True)


async def main(argv):
    units = None
    if "--units" in argv:
        i = argv.index("--units")
        units = [int(u) for u in argv[i + 1].split(",")]
        del argv[i:i + 2]
    if units:
        ctx = ModbusServerContext(slaves={u: make_slave(u) for u in units}, single=False)
    else:
        ctx = ModbusServerContext(slaves=make_slave(1), single=True)
    if argv[1] == "tcp":
        server = await StartAsyncTcpServer(context=ctx, address=(argv[2], int(argv[3])),
                                           framer=ModbusSocketFramer, allow_reuse_address=True,
                                           defer_start=True)
        task = asyncio.create_task(server.serve_forever())
        await server.serving
        print("READY", flush=True)
        await task
    else:
        framer = ModbusAsciiFramer if argv[1] == "ascii" else ModbusRtuFramer
        server = await StartAsyncSerialServer(context=ctx, framer=framer,
                                              port=argv[2], baudrate=int(argv[3]),
                                              bytesize=8, parity="N", stopbits=1, timeout=0.005,
                                              defer_start=True)
        await server.start()
        print("READY", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    if "-v" in sys.argv:
        logging.basicConfig(level=logging.DEBUG)
        sys.argv.remove("-v")
    else:
        logging.disable(logging.ERROR)  # pymodbus logs every disconnect and exception reply as ERROR
    asyncio.run(main(sys.argv))
