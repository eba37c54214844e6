"""The network policy, on fake /proc, /sys and /run trees laid out as the kernel lays them out."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from homing import _dbus, _network
from homing._exceptions import ConfigurationError
from homing._network import LinkInfo, NetworkPolicy, classify_linux, coerce_policy

# /proc/net/route: the kernel pads every line to 127 columns; Metric is decimal, the rest hex.
ROUTE_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"


def route(iface: str, dest: str, gateway: str, flags: str, metric: int, mask: str) -> str:
    return "\t".join([iface, dest, gateway, flags, "0", "0", str(metric), mask, "0", "0", "0"])


def route_table(*rows: str) -> str:
    return "".join(f"{line:<127}\n" for line in (ROUTE_HEADER, *rows))


# /proc/net/ipv6_route of a host without an IPv6 default: ::1 and the "unreachable" default
# that the kernel hangs on lo (flags RTF_REJECT|RTF_NONEXTHOP, no RTF_UP).
IPV6_LO = (
    "00000000000000000000000000000001 80 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)


def ipv6_default(dev: str, metric: int) -> str:
    return (
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        f"fe80000000000000021122fffe334455 {metric:08x} 00000003 00000000 00000003 {dev:>8}\n"
    )


NM_CONNECTION = "6f1c6a2e-3c4b-4b5e-9a51-0d6a1f3a2b7c"


def nm_device_state(*, managed: str = "true", dhcp4: dict[str, str] | None = None) -> str:
    """/run/NetworkManager/devices/<ifindex> as nm_config_device_state_write() writes it."""
    text = f"[device]\nmanaged={managed}\n"
    if managed == "true":
        text += f"connection-uuid={NM_CONNECTION}\nroute-metric-default-effective=600\n"
    if dhcp4:
        text += "\n[dhcp4]\n" + "".join(f"dhcp4.{k}={v}\n" for k, v in dhcp4.items())
    return text


HOTSPOT_LEASE = {
    "broadcast_address": "192.168.43.255",
    "dhcp_lease_time": "3600",
    "dhcp_server_identifier": "192.168.43.1",
    "domain_name_servers": "192.168.43.1",
    "expiry": "1764350000",
    "ip_address": "192.168.43.120",
    "routers": "192.168.43.1",
    "subnet_mask": "255.255.255.0",
}


def relink(link: Path, target: Path) -> None:
    link.symlink_to(os.path.relpath(target, link.parent))


class Tree:
    """Writes /proc/net, /sys/class/net (with its symlinks into /sys/devices) and /run."""

    def __init__(self, root: Path) -> None:
        self.proc, self.sys, self.run = root / "proc", root / "sys", root / "run"
        (self.proc / "net").mkdir(parents=True)
        (self.sys / "class" / "net").mkdir(parents=True)
        self.run.mkdir()
        self.interface("lo", ifindex=1, arphrd=772)

    def routes(self, *rows: str, ipv6: str = IPV6_LO) -> None:
        (self.proc / "net" / "route").write_text(route_table(*rows))
        (self.proc / "net" / "ipv6_route").write_text(ipv6)

    def interface(
        self,
        name: str,
        *,
        ifindex: int,
        arphrd: int = 1,
        devtype: str | None = None,
        device: str | None = None,
        driver: str | None = None,
        wireless: bool = False,
        extra: dict[str, str] | None = None,
        lowers: tuple[str, ...] = (),
    ) -> None:
        """`device` is the parent under /sys/devices ("pci0000:00/0000:00:1c.2/0000:02:00.0")."""
        if device is None:
            path = self.sys / "devices" / "virtual" / "net" / name
        else:
            parent = self.sys / "devices" / device
            path = parent / "net" / name
        path.mkdir(parents=True)
        uevent = (
            f"DEVTYPE={devtype}\n" if devtype else ""
        ) + f"INTERFACE={name}\nIFINDEX={ifindex}\n"
        (path / "uevent").write_text(uevent)
        (path / "type").write_text(f"{arphrd}\n")
        (path / "ifindex").write_text(f"{ifindex}\n")
        for file, text in (extra or {}).items():
            (path / file).parent.mkdir(exist_ok=True)
            (path / file).write_text(text)
        if device is not None:
            assert driver is not None
            bus = "usb" if "/usb" in device else "pci"
            drivers = self.sys / "bus" / bus / "drivers" / driver
            drivers.mkdir(parents=True, exist_ok=True)
            relink(path / "device", parent)
            relink(parent / "driver", drivers)
        if wireless:
            (path / "wireless").mkdir()
            (path / "wireless" / "status").write_text("0x0\n")
            phy = parent / "ieee80211" / "phy0"
            phy.mkdir(parents=True)
            relink(path / "phy80211", phy)
        for lower in lowers:
            relink(path / f"lower_{lower}", (self.sys / "class" / "net" / lower).resolve())
        relink(self.sys / "class" / "net" / name, path)

    def networkmanager(self, ifindex: int, text: str) -> None:
        devices = self.run / "NetworkManager" / "devices"
        devices.mkdir(parents=True, exist_ok=True)
        (devices / str(ifindex)).write_text(text)

    def policy(self, mode: str = "unmetered", *, unknown: str = "deny") -> NetworkPolicy:
        return NetworkPolicy(
            mode, unknown=unknown, proc_root=self.proc, sys_root=self.sys, run_root=self.run
        )

    def classify(self) -> LinkInfo:
        return classify_linux(self.proc, self.sys, self.run)


WLP2S0 = "pci0000:00/0000:00:1c.2/0000:02:00.0"


def wifi_laptop(tree: Tree) -> None:
    tree.interface(
        "wlp2s0", ifindex=3, devtype="wlan", device=WLP2S0, driver="iwlwifi", wireless=True
    )
    tree.interface("docker0", ifindex=4, devtype="bridge")
    (tree.sys / "class" / "net" / "docker0" / "bridge").mkdir()


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tree:
    for key in ("ANDROID_ARGUMENT", "ANDROID_PRIVATE", "P4A_BOOTSTRAP"):
        monkeypatch.delenv(key, raising=False)
    return Tree(tmp_path)


def test_wifi_laptop(tree: Tree) -> None:
    wifi_laptop(tree)
    tree.routes(
        route("wlp2s0", "00000000", "0101A8C0", "0003", 600, "00000000"),
        route("docker0", "000011AC", "00000000", "0001", 0, "0000FFFF"),
        route("wlp2s0", "0001A8C0", "00000000", "0001", 600, "00FFFFFF"),
    )
    policy = tree.policy()
    assert policy.allows()
    assert policy.describe() == LinkInfo("wlp2s0", "wifi", None, "linux")


def test_ethernet_desktop(tree: Tree) -> None:
    tree.interface(
        "enp3s0", ifindex=2, device="pci0000:00/0000:00:1c.5/0000:03:00.0", driver="r8169"
    )
    tree.routes(
        route("enp3s0", "00000000", "0100A8C0", "0003", 100, "00000000"),
        route("enp3s0", "0000A8C0", "00000000", "0001", 100, "00FFFFFF"),
    )
    assert tree.policy("wifi_only").allows()
    assert tree.classify() == LinkInfo("enp3s0", "ethernet", None, "linux")


def test_lte_modem_is_cellular(tree: Tree) -> None:
    tree.interface(
        "wwan0",
        ifindex=5,
        arphrd=519,
        devtype="wwan",
        device="pci0000:00/0000:00:14.0/usb2/2-3/2-3:1.4",
        driver="qmi_wwan",
        extra={"qmi/raw_ip": "Y\n"},
    )
    tree.routes(
        route("wwan0", "00000000", "E9A2400A", "0003", 700, "00000000"),
        route("wwan0", "E8A2400A", "00000000", "0001", 700, "FCFFFFFF"),
    )
    assert tree.classify() == LinkInfo("wwan0", "cellular", None, "linux")
    assert not tree.policy(unknown="allow").allows()
    assert tree.policy("any").allows()


def test_ppp_dialup_is_cellular(tree: Tree) -> None:
    tree.interface("ppp0", ifindex=6, arphrd=512, devtype="ppp")
    tree.routes(
        route("ppp0", "00000000", "00000000", "0001", 0, "00000000"),
        route("ppp0", "0100400A", "00000000", "0005", 0, "FFFFFFFF"),
    )
    assert tree.classify().kind == "cellular"
    assert not tree.policy(unknown="allow").allows()


@pytest.mark.parametrize(
    ("name", "device", "driver"),
    [
        ("usb0", "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0", "rndis_host"),  # Android
        ("enx0a1b2c3d4e5f", "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0", "cdc_ether"),
        ("eth1", "pci0000:00/0000:00:14.0/usb1/1-4/1-4:4.2", "ipheth"),  # iPhone
    ],
)
def test_usb_tethering_counts_as_metered(tree: Tree, name: str, device: str, driver: str) -> None:
    tree.interface(name, ifindex=7, device=device, driver=driver)
    tree.routes(route(name, "00000000", "812AA8C0", "0003", 100, "00000000"))
    assert tree.classify() == LinkInfo(name, "tethered", None, "linux")
    assert not tree.policy(unknown="allow").allows()


def test_no_default_route(tree: Tree) -> None:
    wifi_laptop(tree)
    tree.routes(route("docker0", "000011AC", "00000000", "0001", 0, "0000FFFF"))
    assert tree.classify() == LinkInfo(None, "none", None, "linux")
    assert not tree.policy(unknown="allow").allows()


def test_lower_metric_wins(tree: Tree) -> None:
    wifi_laptop(tree)
    tree.interface(
        "enp0s31f6", ifindex=2, device="pci0000:00/0000:00:1f.6", driver="e1000e"
    )  # docked: NetworkManager gives Ethernet metric 100, Wi-Fi 600
    tree.routes(
        route("wlp2s0", "00000000", "0101A8C0", "0003", 600, "00000000"),
        route("enp0s31f6", "00000000", "0100A8C0", "0003", 100, "00000000"),
    )
    assert tree.classify().interface == "enp0s31f6"


def test_route_that_is_not_up_is_ignored(tree: Tree) -> None:
    wifi_laptop(tree)
    tree.interface("wwan0", ifindex=5, arphrd=519, devtype="wwan")
    tree.routes(
        route("wwan0", "00000000", "E9A2400A", "0002", 0, "00000000"),
        route("wlp2s0", "00000000", "0101A8C0", "0003", 600, "00000000"),
    )
    assert tree.classify().interface == "wlp2s0"


def test_ipv6_only_default_route(tree: Tree) -> None:
    wifi_laptop(tree)
    tree.routes(ipv6=ipv6_default("wlp2s0", 600) + IPV6_LO)
    assert tree.classify() == LinkInfo("wlp2s0", "wifi", None, "linux")


def test_ipv6_unreachable_default_on_lo_is_no_route(tree: Tree) -> None:
    tree.routes()
    assert tree.classify().kind == "none"


@pytest.mark.parametrize(
    ("name", "devtype", "extra"),
    [("tun0", None, {"tun_flags": "0x1001\n"}), ("wg0", "wireguard", {})],
)
@pytest.mark.parametrize(("unknown", "allowed"), [("allow", True), ("deny", False)])
def test_vpn_follows_unknown(
    tree: Tree, name: str, devtype: str | None, extra: dict[str, str], unknown: str, allowed: bool
) -> None:
    wifi_laptop(tree)
    tree.interface(name, ifindex=9, arphrd=65534, devtype=devtype, extra=extra)
    tree.routes(
        route(name, "00000000", "00000000", "0001", 50, "00000000"),
        route("wlp2s0", "00000000", "0101A8C0", "0003", 600, "00000000"),
        route("wlp2s0", "0A0B0C0D", "0101A8C0", "0007", 600, "FFFFFFFF"),
    )
    assert tree.classify() == LinkInfo(name, "vpn", None, "linux")
    assert tree.policy(unknown=unknown).allows() is allowed


@pytest.mark.parametrize(("unknown", "allowed"), [("allow", True), ("deny", False)])
def test_container_veth_is_unknown(tree: Tree, unknown: str, allowed: bool) -> None:
    tree.interface("eth0", ifindex=12)  # a veth: virtual, no DEVTYPE, no lower devices
    tree.routes(route("eth0", "00000000", "010011AC", "0003", 0, "00000000"))
    assert tree.classify() == LinkInfo("eth0", "unknown", None, "linux")
    assert tree.policy(unknown=unknown).allows() is allowed


def test_bridge_carries_its_lower_device(tree: Tree) -> None:
    tree.interface(
        "enp3s0", ifindex=2, device="pci0000:00/0000:00:1c.5/0000:03:00.0", driver="r8169"
    )
    tree.interface("br0", ifindex=10, devtype="bridge", lowers=("enp3s0",))
    tree.routes(route("br0", "00000000", "0100A8C0", "0003", 425, "00000000"))
    assert tree.classify() == LinkInfo("br0", "ethernet", None, "linux")


@pytest.mark.parametrize(("unknown", "allowed"), [("allow", True), ("deny", False)])
def test_unreadable_proc_is_unknown(tmp_path: Path, unknown: str, allowed: bool) -> None:
    missing = tmp_path / "nothing"
    policy = NetworkPolicy(
        "unmetered", unknown=unknown, proc_root=missing, sys_root=missing, run_root=missing
    )
    assert policy.allows() is allowed
    assert policy.describe() == LinkInfo(None, "unknown", None, "linux")


def test_interface_gone_from_sys_is_unknown(tree: Tree) -> None:
    tree.routes(route("wlp2s0", "00000000", "0101A8C0", "0003", 600, "00000000"))
    assert tree.classify() == LinkInfo("wlp2s0", "unknown", None, "linux")


# NetworkManager: the device file says whether it manages the link; D-Bus says if it is metered.


Field = tuple[int, str, str | int]  # (header field code, D-Bus type, value)


class FakeNetworkManager:
    """NetworkManager behind a system bus socket: GetDeviceByIpIface and Device.Metered.

    An independent reading of the D-Bus spec; it answers big-endian, as a big-endian peer would.
    """

    def __init__(self, path: Path, metered: dict[str, int]) -> None:
        self.metered = metered
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.connections = 0
        self._serial = 0
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._listener.settimeout(0.02)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn, conn.makefile("rb") as stream:
                conn.settimeout(5)
                self._session(conn, stream)

    def _session(self, conn: socket.socket, stream: Any) -> None:
        auth = stream.readline()
        assert auth.startswith(b"\0AUTH EXTERNAL ") and auth.endswith(b"\r\n")
        assert bytes.fromhex(auth[15:-2].decode()).decode() == str(os.getuid())
        conn.sendall(b"OK 8f2b6a2f1d1c4c2e9a0b7e5d3c1a2b3c\r\n")
        assert stream.readline() == b"BEGIN\r\n"
        while fixed := stream.read(16):
            assert fixed[:1] == b"l" and fixed[1] == 1 and fixed[3] == 1
            body_length, serial, fields_length = struct.unpack("<3I", fixed[4:])
            header = fixed + stream.read(fields_length + (8 - fields_length % 8) % 8)
            body = stream.read(body_length)
            fields = parse_fields(header, fields_length)
            args = parse_strings(body, str(fields.get(8, "")))
            member = str(fields[3])
            self.calls.append((member, args))
            conn.sendall(self._answer(serial, str(fields[1]), member, args))

    def _answer(self, serial: int, path: str, member: str, args: tuple[str, ...]) -> bytes:
        self._serial += 1
        reply: list[Field] = [(5, "u", serial), (6, "s", ":1.42"), (7, "s", "org.freedesktop.DBus")]
        if member == "Hello":
            signal: list[Field] = [
                (1, "o", "/org/freedesktop/DBus"),
                (2, "s", "org.freedesktop.DBus"),
                (3, "s", "NameAcquired"),
                (6, "s", ":1.42"),
                (7, "s", "org.freedesktop.DBus"),
            ]
            return be_message(2, reply, "s", be_string(":1.42")) + be_message(
                4, signal, "s", be_string(":1.42")
            )
        if member == "GetDeviceByIpIface" and args[0] in self.metered:
            index = list(self.metered).index(args[0])
            device = f"/org/freedesktop/NetworkManager/Devices/{index + 1}"
            return be_message(2, reply, "o", be_string(device))
        if member == "Get" and args == ("org.freedesktop.NetworkManager.Device", "Metered"):
            value = list(self.metered.values())[int(path.rsplit("/", 1)[1]) - 1]
            return be_message(2, reply, "v", b"\x01u\x00\x00" + struct.pack(">I", value))
        error: list[Field] = [(4, "s", "org.freedesktop.NetworkManager.UnknownDevice"), *reply]
        return be_message(3, error, "s", be_string("No device found for the requested iface."))


def parse_fields(header: bytes, length: int) -> dict[int, str | int]:
    fields: dict[int, str | int] = {}
    pos = 16
    while pos < 16 + length:
        pos += (8 - pos % 8) % 8
        code, size = header[pos], header[pos + 1]
        kind = header[pos + 2 : pos + 2 + size].decode()
        pos += 3 + size
        if kind == "g":
            fields[code] = header[pos + 1 : pos + 1 + header[pos]].decode()
            pos += header[pos] + 2
        else:
            pos += (4 - pos % 4) % 4
            (size,) = struct.unpack_from("<I", header, pos)
            fields[code] = header[pos + 4 : pos + 4 + size].decode()
            pos += 5 + size
    return fields


def parse_strings(body: bytes, signature: str) -> tuple[str, ...]:
    assert set(signature) <= {"s"}
    values, pos = [], 0
    for _ in signature:
        pos += (4 - pos % 4) % 4
        (size,) = struct.unpack_from("<I", body, pos)
        values.append(body[pos + 4 : pos + 4 + size].decode())
        pos += 5 + size
    assert pos == len(body)
    return tuple(values)


def be_string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">I", len(raw)) + raw + b"\0"


def be_message(kind: int, fields: list[Field], signature: str, body: bytes) -> bytes:
    out = bytearray(struct.pack(">cBBBIII", b"B", kind, 1, 1, len(body), 1000, 0))
    for code, sig, value in [*fields, (8, "g", signature)]:
        out += bytes((8 - len(out) % 8) % 8)
        out += bytes([code, 1]) + sig.encode() + b"\0"
        if sig == "g":
            out += bytes([len(str(value))]) + str(value).encode() + b"\0"
        elif sig == "u":
            out += bytes((4 - len(out) % 4) % 4) + struct.pack(">I", value)
        else:
            out += bytes((4 - len(out) % 4) % 4) + be_string(str(value))
    struct.pack_into(">I", out, 12, len(out) - 16)
    out += bytes((8 - len(out) % 8) % 8)
    return bytes(out) + body


@pytest.fixture
def networkmanager(tree: Tree) -> Iterator[Callable[[dict[str, int]], FakeNetworkManager]]:
    started: list[FakeNetworkManager] = []

    def start(metered: dict[str, int]) -> FakeNetworkManager:
        path = tree.run / "dbus" / "system_bus_socket"
        assert len(str(path)) < 100, "AF_UNIX paths are limited to 107 bytes"
        path.parent.mkdir(parents=True)
        started.append(FakeNetworkManager(path, metered))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def hotspot(tree: Tree) -> None:
    wifi_laptop(tree)
    tree.routes(route("wlp2s0", "00000000", "012BA8C0", "0003", 600, "00000000"))
    tree.networkmanager(3, nm_device_state(dhcp4=HOTSPOT_LEASE))


def test_wifi_flagged_metered_by_networkmanager(
    tree: Tree, networkmanager: Callable[[dict[str, int]], FakeNetworkManager]
) -> None:
    hotspot(tree)
    fake = networkmanager({"wlp2s0": 3})  # NM_METERED_GUESS_YES: a phone's hotspot
    policy = tree.policy(unknown="allow")
    assert not policy.allows()
    assert policy.describe() == LinkInfo("wlp2s0", "wifi", True, "linux")
    assert fake.calls == [
        ("Hello", ()),
        ("GetDeviceByIpIface", ("wlp2s0",)),
        ("Get", ("org.freedesktop.NetworkManager.Device", "Metered")),
    ]


@pytest.mark.parametrize(
    ("kind", "nm_metered", "metered", "allowed"),
    [
        ("wifi", 1, True, False),  # yes, set on the connection
        ("wifi", 2, False, True),
        ("wifi", 4, False, True),  # guess-no
        ("wifi", 0, None, True),  # unknown: the device is not connected
        ("tethered", 2, False, True),  # the user said this phone's plan is unlimited
        ("tethered", 4, None, False),  # NetworkManager's fallback guess proves nothing
        ("tethered", 3, True, False),
    ],
)
def test_networkmanager_verdicts(
    tree: Tree,
    networkmanager: Callable[[dict[str, int]], FakeNetworkManager],
    kind: str,
    nm_metered: int,
    metered: bool | None,
    allowed: bool,
) -> None:
    if kind == "wifi":
        hotspot(tree)
        name = "wlp2s0"
    else:
        name = "usb0"
        tree.interface(
            name, ifindex=3, device="pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0", driver="rndis_host"
        )
        tree.routes(route(name, "00000000", "812AA8C0", "0003", 100, "00000000"))
        tree.networkmanager(3, nm_device_state())
    networkmanager({name: nm_metered})
    policy = tree.policy()
    assert policy.allows() is allowed
    assert policy.describe() == LinkInfo(name, kind, metered, "linux")


def test_unmanaged_device_never_asks_the_bus(
    tree: Tree, networkmanager: Callable[[dict[str, int]], FakeNetworkManager]
) -> None:
    hotspot(tree)
    tree.networkmanager(3, nm_device_state(managed="false"))
    fake = networkmanager({"wlp2s0": 1})
    assert tree.classify() == LinkInfo("wlp2s0", "wifi", None, "linux")
    assert fake.connections == 0


def test_device_unknown_to_networkmanager_on_the_bus(
    tree: Tree, networkmanager: Callable[[dict[str, int]], FakeNetworkManager]
) -> None:
    hotspot(tree)
    fake = networkmanager({"enp3s0": 1})
    assert tree.classify() == LinkInfo("wlp2s0", "wifi", None, "linux")
    assert fake.calls[-1] == ("GetDeviceByIpIface", ("wlp2s0",))


@pytest.mark.parametrize(
    "option", ["ANDROID_METERED", "41:4e:44:52:4f:49:44:5f:4d:45:54:45:52:45:44"]
)
def test_without_a_bus_the_android_dhcp_hint_counts(tree: Tree, option: str) -> None:
    wifi_laptop(tree)
    tree.routes(route("wlp2s0", "00000000", "012BA8C0", "0003", 600, "00000000"))
    lease = {**HOTSPOT_LEASE, "vendor_encapsulated_options": option}
    tree.networkmanager(3, nm_device_state(dhcp4=lease))
    assert tree.classify() == LinkInfo("wlp2s0", "wifi", True, "linux")
    tree.networkmanager(3, nm_device_state(dhcp4=HOTSPOT_LEASE))
    assert tree.classify() == LinkInfo("wlp2s0", "wifi", None, "linux")


def test_a_silent_bus_costs_one_timeout(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_dbus, "TIMEOUT", 0.05)
    hotspot(tree)
    path = tree.run / "dbus" / "system_bus_socket"
    path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()  # accepts into the backlog, never answers
        assert tree.classify() == LinkInfo("wlp2s0", "wifi", None, "linux")


@pytest.fixture
def dbus_daemon(tree: Tree) -> Iterator[Path]:
    """A real dbus-daemon on <run>/dbus/system_bus_socket, with no NetworkManager on it."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed")
    path = tree.run / "dbus" / "system_bus_socket"
    path.parent.mkdir(parents=True)
    command = ["dbus-daemon", "--session", f"--address=unix:path={path}", "--nofork"]
    with subprocess.Popen(
        [*command, "--print-address=1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as daemon:
        assert daemon.stdout is not None
        assert daemon.stdout.readline().startswith(b"unix:")  # printed once it listens
        yield path
        daemon.terminate()


def test_wire_format_against_a_real_dbus_daemon(tree: Tree, dbus_daemon: Path) -> None:
    with _dbus.SystemBus(dbus_daemon) as bus:
        reply = bus.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetNameOwner",
            "org.freedesktop.DBus",
        )
        assert reply is not None and reply.signature == "s"
        assert _dbus.get_string(reply.body, 0, reply.endian)[0] == "org.freedesktop.DBus"
        # NetworkManager is not on this bus: an error reply, not an exception.
        assert bus.call("org.freedesktop.NetworkManager", "/", "x.y", "Z", "wlp2s0") is None
    hotspot(tree)
    assert tree.classify() == LinkInfo("wlp2s0", "wifi", None, "linux")


# Android, through a fake pyjnius autoclass.

NOT_METERED = 11


class NetworkCapabilities:
    """android.net.NetworkCapabilities: its constants, and Java's method names."""

    TRANSPORT_CELLULAR, TRANSPORT_WIFI, TRANSPORT_BLUETOOTH = 0, 1, 2
    TRANSPORT_ETHERNET, TRANSPORT_VPN = 3, 4
    NET_CAPABILITY_NOT_METERED = NOT_METERED

    def __init__(self, *transports: int, capabilities: tuple[int, ...] = ()) -> None:
        self.transports, self.capabilities = set(transports), set(capabilities)

    def hasTransport(self, transport: int) -> bool:
        return transport in self.transports

    def hasCapability(self, capability: int) -> bool:
        return capability in self.capabilities


class ConnectivityManager:
    def __init__(self, caps: NetworkCapabilities | None, metered: bool, interface: str) -> None:
        self.caps, self.metered, self.interface = caps, metered, interface

    def getActiveNetwork(self) -> object | None:
        return None if self.caps is None else object()

    def isActiveNetworkMetered(self) -> bool:
        return self.metered

    def getNetworkCapabilities(self, network: object) -> NetworkCapabilities | None:
        return self.caps

    def getLinkProperties(self, network: object) -> SimpleNamespace:
        return SimpleNamespace(getInterfaceName=lambda: self.interface)


def fake_autoclass(manager: object, *, service: bool = False) -> Callable[[str], Any]:
    context = SimpleNamespace(
        getSystemService=lambda name: manager if name == "connectivity" else None
    )
    classes: dict[str, Any] = {
        "org.kivy.android.PythonActivity": SimpleNamespace(mActivity=None if service else context),
        "org.kivy.android.PythonService": SimpleNamespace(mService=context if service else None),
        "android.content.Context": SimpleNamespace(CONNECTIVITY_SERVICE="connectivity"),
        "android.net.NetworkCapabilities": NetworkCapabilities,
    }
    return classes.__getitem__


WIFI, CELLULAR, VPN = (
    NetworkCapabilities.TRANSPORT_WIFI,
    NetworkCapabilities.TRANSPORT_CELLULAR,
    NetworkCapabilities.TRANSPORT_VPN,
)

UNMETERED_WIFI = NetworkCapabilities(WIFI, capabilities=(NOT_METERED,))
UNMETERED_5G = NetworkCapabilities(CELLULAR, capabilities=(NOT_METERED,))


@pytest.mark.parametrize(
    ("manager", "expected"),
    [
        (
            ConnectivityManager(
                NetworkCapabilities(WIFI, capabilities=(NOT_METERED,)), False, "wlan0"
            ),
            LinkInfo("wlan0", "wifi", False, "android"),
        ),
        (
            ConnectivityManager(NetworkCapabilities(CELLULAR), True, "rmnet_data0"),
            LinkInfo("rmnet_data0", "cellular", True, "android"),
        ),
        (  # a phone's hotspot: Wi-Fi, but metered
            ConnectivityManager(NetworkCapabilities(WIFI), True, "wlan0"),
            LinkInfo("wlan0", "wifi", True, "android"),
        ),
        (  # a VPN names its underlying transport too
            ConnectivityManager(NetworkCapabilities(VPN, CELLULAR), True, "tun0"),
            LinkInfo("tun0", "cellular", True, "android"),
        ),
        (ConnectivityManager(None, True, ""), LinkInfo(None, "none", None, "android")),
    ],
)
@pytest.mark.parametrize("service", [False, True])
def test_android_link(manager: ConnectivityManager, expected: LinkInfo, service: bool) -> None:
    assert _network._android_link(fake_autoclass(manager, service=service)) == expected


def test_android_5_has_only_the_metered_verdict() -> None:
    manager = SimpleNamespace(isActiveNetworkMetered=lambda: False)
    info = _network._android_link(fake_autoclass(manager))
    assert info == LinkInfo(None, "unknown", False, "android")


@pytest.mark.parametrize(
    ("manager", "allowed"),
    [
        (ConnectivityManager(UNMETERED_WIFI, False, "wlan0"), True),
        (ConnectivityManager(UNMETERED_5G, False, "rmnet_data0"), False),  # never cellular
        (ConnectivityManager(NetworkCapabilities(WIFI), True, "wlan0"), False),
    ],
)
def test_policy_on_android_asks_pyjnius(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manager: ConnectivityManager, allowed: bool
) -> None:
    monkeypatch.setenv("ANDROID_ARGUMENT", "/data/user/0/org.example.app/files/app")
    monkeypatch.setitem(sys.modules, "jnius", SimpleNamespace(autoclass=fake_autoclass(manager)))
    policy = NetworkPolicy("unmetered", unknown="allow", proc_root=tmp_path)
    assert policy.allows() is allowed
    assert policy.describe().source == "android"


def test_android_without_pyjnius_is_unknown_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("P4A_BOOTSTRAP", "SDL2")
    monkeypatch.setitem(sys.modules, "jnius", None)  # makes the import fail
    policy = NetworkPolicy("unmetered", unknown="allow")
    with caplog.at_level(logging.WARNING, logger="homing"):
        assert policy.allows()
    assert policy.describe() == LinkInfo(None, "unknown", None, "android")
    assert "ACCESS_NETWORK_STATE" in caplog.text


# The policy object.


def test_any_always_allows_without_looking(tmp_path: Path) -> None:
    policy = NetworkPolicy(proc_root=tmp_path / "absent")
    assert policy.mode == "any"
    assert policy.allows()
    assert policy.describe() == LinkInfo(None, "unknown", None, "any")


def test_callable_is_used_as_is() -> None:
    answers = iter([True, False, True])
    policy = NetworkPolicy(lambda: next(answers))
    assert [policy.allows(), policy.allows(), policy.allows()] == [True, False, True]
    assert policy.describe().source == "callable"


def test_raising_callable_is_no_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    failing = True

    def check() -> bool:
        if failing:
            raise RuntimeError("battery service gone")
        return True

    policy = NetworkPolicy(check)
    with caplog.at_level(logging.DEBUG, logger="homing"):
        assert [policy.allows() for _ in range(3)] == [False, False, False]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert warnings[0].exc_info is not None
        failing = False
        assert policy.allows()
        failing = True
        assert not policy.allows()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


@pytest.mark.parametrize("mode", ["wifi", "Unmetered", "", 3, None])
def test_bad_mode_names_the_allowed_values(mode: Any) -> None:
    with pytest.raises(ConfigurationError, match="'any', 'unmetered', 'wifi_only' or a callable"):
        NetworkPolicy(mode)


def test_bad_unknown_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="'allow' or 'deny'"):
        NetworkPolicy("unmetered", unknown="maybe")


def test_coerce_policy() -> None:
    policy = NetworkPolicy("unmetered", unknown="allow")
    assert coerce_policy(policy) is policy
    assert coerce_policy("wifi_only").mode == "unmetered"
    assert coerce_policy("any").allows()

    def check() -> bool:
        return False

    assert coerce_policy(check).mode is check
    with pytest.raises(ConfigurationError):
        coerce_policy("cellular")
