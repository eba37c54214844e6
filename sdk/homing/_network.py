"""The network policy: may the SDK upload over the link it has right now?

On Linux the link is the default route's interface (/proc/net/route, /proc/net/ipv6_route), what
sysfs says about it, and NetworkManager's metered verdict. Under python-for-android it is what
Android's ConnectivityManager says, through pyjnius.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homing import _dbus
from homing._exceptions import ConfigurationError

__all__ = ["LinkInfo", "NetworkPolicy", "classify_linux", "coerce_policy"]

logger = logging.getLogger("homing")

_MODES = ("any", "unmetered", "wifi_only")
_UNKNOWN = ("allow", "deny")


@dataclass(frozen=True)
class LinkInfo:
    """What the SDK found out about the link it would upload over.

    ``kind`` is one of "wifi", "ethernet", "cellular", "tethered", "vpn", "loopback", "none"
    or "unknown"; ``metered`` is None unless NetworkManager or Android said.

    Example::

        info = policy.describe()
        print(info.interface, info.kind, info.metered)  # wlan0 wifi None
    """

    interface: str | None
    kind: str
    metered: bool | None
    source: str


class NetworkPolicy:
    """When the SDK may upload: "any", "unmetered" (alias "wifi_only"), or a callable.

    "unmetered" allows Wi-Fi and Ethernet, never cellular, USB tethering, or a link that
    NetworkManager or Android calls metered. ``unknown`` says what a link that cannot be
    classified means (a VPN, a container's veth): "deny" (the default) or "allow".

    Example::

        policy = NetworkPolicy("unmetered", unknown="allow")
        if policy.allows():
            ...
        NetworkPolicy(lambda: on_charger())  # any callable returning a bool
    """

    def __init__(
        self,
        mode: str | Callable[[], bool] = "any",
        *,
        unknown: str = "deny",
        proc_root: str | os.PathLike[str] = "/proc",
        sys_root: str | os.PathLike[str] = "/sys",
        run_root: str | os.PathLike[str] = "/run",
    ) -> None:
        if isinstance(mode, str) and mode in _MODES:
            self.mode: str | Callable[[], bool] = "unmetered" if mode == "wifi_only" else mode
        elif callable(mode):
            self.mode = mode
        else:
            raise ConfigurationError(
                "network policy must be 'any', 'unmetered', 'wifi_only' or a callable "
                f"returning bool, not {mode!r}"
            )
        if unknown not in _UNKNOWN:
            raise ConfigurationError(
                f"NetworkPolicy(unknown=...) must be 'allow' or 'deny', not {unknown!r}"
            )
        self.unknown = unknown
        self._roots = (Path(proc_root), Path(sys_root), Path(run_root))
        self._last: LinkInfo | None = None
        if not isinstance(self.mode, str):
            self._last = LinkInfo(None, "unknown", None, "callable")
        elif self.mode == "any":
            self._last = LinkInfo(None, "unknown", None, "any")
        self._failing = False
        self._allowed: bool | None = None

    def __repr__(self) -> str:
        return f"NetworkPolicy({self.mode!r}, unknown={self.unknown!r})"

    def allows(self) -> bool:
        """Whether an upload may start now. Never raises."""
        if self.mode == "any":
            return True
        if not isinstance(self.mode, str):
            return self._ask(self.mode)
        info = self._classify()
        allowed = _unmetered_allows(info, self.unknown == "allow")
        if allowed != self._allowed:
            logger.debug("network policy: %s, uploads %s", info, "on" if allowed else "paused")
            self._allowed = allowed
        return allowed

    def describe(self) -> LinkInfo:
        """What the last classification found (classifying now if there was none)."""
        return self._last if self._last is not None else self._classify()

    def _ask(self, check: Callable[[], bool]) -> bool:
        try:
            answer = bool(check())
        except Exception:
            # The uploader asks before every attempt: warn once per run of failures.
            level = logging.DEBUG if self._failing else logging.WARNING
            logger.log(level, "network policy %r raised; not uploading", check, exc_info=True)
            self._failing = True
            return False
        self._failing = False
        return answer

    def _classify(self) -> LinkInfo:
        source = "android" if _on_android() else "linux"
        try:
            if source == "android":
                info = _android_link(importlib.import_module("jnius").autoclass)
            else:
                info = classify_linux(*self._roots)
        except Exception:
            level = logging.DEBUG if self._failing else logging.WARNING
            hint = " (does the app have the ACCESS_NETWORK_STATE permission?)"
            logger.log(
                level,
                "could not classify the network link%s; treating it as unknown",
                hint if source == "android" else "",
                exc_info=True,
            )
            self._failing = True
            info = LinkInfo(None, "unknown", None, source)
        else:
            self._failing = False
        self._last = info
        return info


def coerce_policy(value: str | Callable[[], bool] | NetworkPolicy) -> NetworkPolicy:
    """Turn what ``Analytics(network_policy=...)`` accepts into a NetworkPolicy.

    Example::

        coerce_policy("wifi_only").mode  # 'unmetered'
    """
    return value if isinstance(value, NetworkPolicy) else NetworkPolicy(value)


def _unmetered_allows(info: LinkInfo, unknown_allows: bool) -> bool:
    if info.kind in ("cellular", "none", "loopback"):
        return False
    if info.metered is not None:
        return not info.metered
    if info.kind in ("wifi", "ethernet"):
        return True
    if info.kind in ("unknown", "vpn"):
        return unknown_allows
    return False  # tethered: a phone's data plan unless someone said otherwise


# Linux ---------------------------------------------------------------------------------------

_RTF_UP = 0x0001
_RTF_REJECT = 0x0200  # "unreachable default" routes, such as the one IPv6 puts on lo

# ARPHRD_* numbers from <linux/if_arp.h>, as sysfs prints them in <if>/type.
_KIND_BY_ARPHRD = {
    512: "cellular",  # PPP: dial-up and 3G modems
    519: "cellular",  # RAWIP: qmi_wwan raw-ip mode, mhi_net
    772: "loopback",
    65534: "vpn",  # NONE: tun, wireguard
    768: "vpn",  # IPIP
    769: "vpn",  # TUNNEL6
    776: "vpn",  # SIT
    778: "vpn",  # IPGRE
    823: "vpn",  # IP6GRE
}
_CELLULAR_DRIVERS = frozenset(
    {"qmi_wwan", "cdc_mbim", "option", "huawei_cdc_ncm", "sierra_net", "mhi_net", "ipa"}
)
# A phone sharing its data plan over USB: RNDIS and ECM/NCM from Android, ipheth from iPhones.
_TETHER_DRIVERS = frozenset({"rndis_host", "cdc_ether", "cdc_ncm", "cdc_eem", "ipheth"})


def classify_linux(proc_root: Path, sys_root: Path, run_root: Path) -> LinkInfo:
    """Classify the default route's link from /proc, /sys and /run. Never raises.

    Example::

        classify_linux(Path("/proc"), Path("/sys"), Path("/run"))
        # LinkInfo(interface='wlp2s0', kind='wifi', metered=None, source='linux')
    """
    try:
        interface = _default_interface(Path(proc_root) / "net")
    except (OSError, ValueError):
        return LinkInfo(None, "unknown", None, "linux")
    if interface is None:
        return LinkInfo(None, "none", None, "linux")
    net = Path(sys_root) / "class" / "net"
    try:
        kind = _interface_kind(net, interface)
        ifindex = int((net / interface / "ifindex").read_text())
    except (OSError, ValueError):
        return LinkInfo(interface, "unknown", None, "linux")
    metered = _networkmanager_metered(Path(run_root), interface, ifindex, kind)
    return LinkInfo(interface, kind, metered, "linux")


def _default_interface(proc_net: Path) -> str | None:
    tables = 0
    for name, parse in (("route", _ipv4_defaults), ("ipv6_route", _ipv6_defaults)):
        try:
            text = (proc_net / name).read_text()
        except FileNotFoundError:
            continue  # a kernel without IPv4 or IPv6
        tables += 1
        routes = parse(text)
        if routes:
            return min(routes, key=lambda route: route[0])[1]
    if not tables:
        raise FileNotFoundError(proc_net / "route")
    return None


def _ipv4_defaults(text: str) -> list[tuple[int, str]]:
    # Iface Destination Gateway Flags RefCnt Use Metric Mask ...; hex except Metric.
    routes = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000" and f[0] != "*":
            flags = int(f[3], 16)
            if flags & _RTF_UP and not flags & _RTF_REJECT:
                routes.append((int(f[6]), f[0]))
    return routes


def _ipv6_defaults(text: str) -> list[tuple[int, str]]:
    # dest plen src plen next-hop metric refcnt use flags device; all hex.
    routes = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and f[9] != "lo":
            flags = int(f[8], 16)
            if flags & _RTF_UP and not flags & _RTF_REJECT:
                routes.append((int(f[5], 16), f[9]))
    return routes


def _interface_kind(net: Path, name: str, depth: int = 0) -> str:
    if "/" in name or name in (".", ".."):
        raise ValueError(f"not an interface name: {name!r}")
    dev = net / name
    lines = (dev / "uevent").read_text().splitlines()
    uevent = {key: value for key, _, value in (line.partition("=") for line in lines)}
    devtype = uevent.get("DEVTYPE", "")
    if name == "lo":
        return "loopback"
    if devtype == "wlan" or (dev / "wireless").is_dir() or (dev / "phy80211").exists():
        return "wifi"
    if devtype == "wwan":
        return "cellular"
    if devtype == "wireguard" or (dev / "tun_flags").exists():
        return "vpn"
    arphrd = int((dev / "type").read_text())
    if arphrd in _KIND_BY_ARPHRD:
        return _KIND_BY_ARPHRD[arphrd]
    driver = _driver(dev)
    if driver in _CELLULAR_DRIVERS:
        return "cellular"
    if driver in _TETHER_DRIVERS:
        return "tethered"
    if driver is not None:
        return "ethernet" if arphrd == 1 else "unknown"
    # A virtual device. A bridge, bond or VLAN carries what its lower devices carry; a veth's
    # far end (a container's uplink) is out of sight.
    if depth < 3:
        lowers = {_interface_kind(net, p.name[6:], depth + 1) for p in dev.glob("lower_*")}
        if len(lowers) == 1:
            return lowers.pop()
    return "unknown"


def _driver(dev: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(dev / "device" / "driver"))
    except FileNotFoundError:
        return None  # virtual devices have no device/


# NetworkManager ------------------------------------------------------------------------------

_NM = "org.freedesktop.NetworkManager"
# NMMetered, from NetworkManager's nm-dbus-interface.h.
_NM_METERED_YES, _NM_METERED_NO, _NM_METERED_GUESS_YES, _NM_METERED_GUESS_NO = 1, 2, 3, 4
_ANDROID_METERED = "ANDROID_METERED"


def _networkmanager_metered(run: Path, interface: str, ifindex: int, kind: str) -> bool | None:
    # NetworkManager keeps a GKeyFile per device in /run/NetworkManager/devices/<ifindex>
    # (nm-config.c, nm_config_device_state_write): [device] managed=, connection-uuid=, and
    # since 1.40 the DHCP lease as [dhcp4] dhcp4.<option>=. It holds no metered flag; the
    # verdict is only on D-Bus (Device.Metered). The file tells cheaply whether NetworkManager
    # runs this link at all, so machines without it never touch the bus.
    try:
        state = _read_keyfile(run / "NetworkManager" / "devices" / str(ifindex))
    except (OSError, ValueError):
        return None
    if state.get("device", {}).get("managed", "").lower() not in ("true", "yes", "on", "1"):
        return None
    value = _nm_device_metered(run / "dbus" / "system_bus_socket", interface)
    if value is None:
        # No system bus (a sandbox): use the hint NetworkManager trusts, the ANDROID_METERED
        # vendor option of a phone's hotspot (recorded here by the dhclient backend).
        option = state.get("dhcp4", {}).get("dhcp4.vendor_encapsulated_options", "")
        with contextlib.suppress(ValueError):
            option += bytes.fromhex(option.replace(":", "")).decode("latin-1")
        return True if _ANDROID_METERED in option else None
    if value in (_NM_METERED_YES, _NM_METERED_GUESS_YES):
        return True
    if value == _NM_METERED_NO or (value == _NM_METERED_GUESS_NO and kind in ("wifi", "ethernet")):
        return False
    # GUESS_NO is NetworkManager's fallback for a link it knows nothing about: it must not
    # outweigh our own evidence of a phone, a modem or a tunnel.
    return None


def _read_keyfile(path: Path) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    group: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            group = groups.setdefault(line[1:-1], {})
        elif line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            group[key.strip()] = value.strip()
    return groups


def _nm_device_metered(bus_path: Path, interface: str) -> int | None:
    try:
        with _dbus.SystemBus(bus_path) as bus:
            nm_path = "/org/freedesktop/NetworkManager"
            reply = bus.call(_NM, nm_path, _NM, "GetDeviceByIpIface", interface)
            if reply is None or reply.signature != "o":
                return None
            device, _ = _dbus.get_string(reply.body, 0, reply.endian)
            properties = "org.freedesktop.DBus.Properties"
            reply = bus.call(_NM, device, properties, "Get", f"{_NM}.Device", "Metered")
            if reply is None or reply.signature != "v":
                return None
            inner, pos = _dbus.get_signature(reply.body, 0)
            if inner != "u":
                return None
            return _dbus.get_uint32(reply.body, pos, reply.endian)[0]
    except (OSError, ValueError, IndexError, struct.error):
        return None


# Android -------------------------------------------------------------------------------------


def _on_android() -> bool:
    return any(
        key in os.environ for key in ("ANDROID_ARGUMENT", "ANDROID_PRIVATE", "P4A_BOOTSTRAP")
    )


def _android_link(autoclass: Callable[[str], Any]) -> LinkInfo:
    try:
        context = autoclass("org.kivy.android.PythonActivity").mActivity
    except Exception:  # pyjnius raises JavaException when a bootstrap lacks the class
        context = None
    if context is None:  # running in a python-for-android service, not an activity
        context = autoclass("org.kivy.android.PythonService").mService
    manager = context.getSystemService(autoclass("android.content.Context").CONNECTIVITY_SERVICE)
    if not hasattr(manager, "getActiveNetwork"):  # Android 5 (API 21-22): only the verdict
        return LinkInfo(None, "unknown", bool(manager.isActiveNetworkMetered()), "android")
    network = manager.getActiveNetwork()
    if network is None:
        return LinkInfo(None, "none", None, "android")
    metered = bool(manager.isActiveNetworkMetered())
    capabilities = manager.getNetworkCapabilities(network)
    if capabilities is None:
        return LinkInfo(None, "unknown", metered, "android")
    caps = autoclass("android.net.NetworkCapabilities")
    if capabilities.hasCapability(caps.NET_CAPABILITY_NOT_METERED):
        metered = False
    kind = "unknown"
    # A VPN's capabilities carry its underlying transports too: name the physical link first.
    for transport, name in (
        (caps.TRANSPORT_CELLULAR, "cellular"),
        (caps.TRANSPORT_WIFI, "wifi"),
        (caps.TRANSPORT_ETHERNET, "ethernet"),
        (caps.TRANSPORT_BLUETOOTH, "tethered"),
        (caps.TRANSPORT_VPN, "vpn"),
    ):
        if capabilities.hasTransport(transport):
            kind = name
            break
    link = manager.getLinkProperties(network)
    interface = link.getInterfaceName() if link is not None else None
    return LinkInfo(interface, kind, metered, "android")
