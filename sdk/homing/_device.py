"""What the device says about itself: the endpoint profile's automatic `Demographic`.

Every probe reads files under `root` (``/`` unless a test passes a fake tree) or asks an
injected function, and none raises: a field the system does not tell is left out.
"""

from __future__ import annotations

import locale
import logging
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("homing")

# What the BIOS says when the vendor did not fill a field in.
_PLACEHOLDERS = frozenset(
    {
        "", "none", "n/a", "na", "not applicable", "not specified", "default string",
        "to be filled by o.e.m.", "system product name", "system manufacturer",
        "system version", "o.e.m.", "oem", "x.x", "0", "1.0", "123456789",
    }
)  # fmt: skip
_ZONE_PART = re.compile(r"[A-Za-z0-9_+-]{1,30}")
_ZONEINFO_MARKERS = ("/zoneinfo/", "/zoneinfo.default/")


@dataclass
class Probe:
    """Where the facts come from; every part can be replaced in tests."""

    root: Path = Path("/")
    system: Callable[[], str] = platform.system
    release: Callable[[], str] = platform.release
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    locale_name: Callable[[], str | None] = lambda: _default_locale()
    mac_ver: Callable[[], str] = lambda: platform.mac_ver()[0]
    win32_ver: Callable[[], tuple[str, str]] = lambda: platform.win32_ver()[:2]
    is_android: Callable[[], bool] = lambda: _is_android()
    sysctl: Callable[[str], str | None] = lambda name: _sysctl(name)


def demographic(app_version: str | None = None, probe: Probe | None = None) -> dict[str, str]:
    """The automatic `Demographic` fields that this device tells; never raises.

    >>> sorted(demographic("1.2", Probe(root=Path("/nonexistent"), system=lambda: "Plan9",
    ...     release=lambda: "4", environ={"TZ": "Europe/Paris"}, locale_name=lambda: "fr_FR",
    ...     is_android=lambda: False)).items())
    [('AppVersion', '1.2'), ('Locale', 'fr_FR'), ('Platform', 'Plan9'), ('PlatformVersion', '4'), ('Timezone', 'Europe/Paris')]
    """  # noqa: E501
    probe = probe or Probe()
    found: dict[str, str | None] = {}
    try:
        found.update(_platform(probe))
    except Exception:
        logger.debug("homing: cannot read the platform", exc_info=True)
    for name, reader in (("Locale", _locale), ("Timezone", timezone_name)):
        if found.get(name):
            continue  # Android's own answer
        try:
            found[name] = reader(probe)
        except Exception:
            logger.debug("homing: cannot read %s", name, exc_info=True)
    found["AppVersion"] = app_version
    return {name: value[:1024] for name, value in found.items() if value}


def _platform(probe: Probe) -> dict[str, str | None]:
    if probe.is_android():
        return _android()
    system = probe.system()
    if system == "Linux":
        return _linux(probe)
    if system == "Darwin":
        return {
            "Platform": "macOS",
            "PlatformVersion": probe.mac_ver() or probe.release(),
            "Make": "Apple",
            "Model": probe.sysctl("hw.model"),
        }
    if system == "Windows":
        release, version = probe.win32_ver()
        return {"Platform": "Windows", "PlatformVersion": version or release, **_windows()}
    return {"Platform": system or None, "PlatformVersion": probe.release() or None}


def _linux(probe: Probe) -> dict[str, str | None]:
    release = _os_release(probe.root)
    dmi = probe.root / "sys/class/dmi/id"
    model = _read(dmi / "product_name")
    make = _read(dmi / "sys_vendor")
    if model is None:
        # A Raspberry Pi and most ARM boards have no DMI; the device tree names the board.
        model = _read(probe.root / "proc/device-tree/model")
    return {
        # "Linux" keeps every distribution in one platform; the version says which one.
        "Platform": "Linux",
        "PlatformVersion": " ".join(
            part for part in (release.get("ID"), release.get("VERSION_ID")) if part
        )
        or probe.release()
        or None,
        "Make": make,
        "Model": model,
        "ModelVersion": _read(dmi / "product_version"),
    }


def _os_release(root: Path) -> dict[str, str]:
    for path in (root / "etc/os-release", root / "usr/lib/os-release"):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key and not key.startswith("#"):
                values[key] = value.strip().strip("\"'")
        return values
    return {}


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().strip("\x00").strip()
    except OSError:
        return None
    return None if text.lower() in _PLACEHOLDERS else text


def _locale(probe: Probe) -> str | None:
    name = probe.locale_name()
    if not name:
        for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
            if probe.environ.get(var):
                name = probe.environ[var]
                break
    if not name:
        return None
    name = name.split(".")[0].split("@")[0].replace("-", "_")
    return None if name in ("C", "POSIX") else name


def _default_locale() -> str | None:
    try:
        name = locale.getlocale()[0]
    except ValueError:
        name = None
    return name


def timezone_name(probe: Probe | None = None) -> str | None:
    """The system's IANA time zone name (e.g. ``Europe/Paris``), or None if it cannot tell."""
    probe = probe or Probe()
    tz = probe.environ.get("TZ", "").lstrip(":")
    if tz:
        if "/zoneinfo/" in tz:
            tz = tz.split("/zoneinfo/", 1)[1]
        if _looks_iana(tz):
            return tz
    text = _read(probe.root / "etc/timezone")  # Debian and its derivatives
    if text and _looks_iana(text.split()[0]):
        return text.split()[0]
    clock = _read(probe.root / "etc/sysconfig/clock")  # older Red Hat systems
    if clock:
        for line in clock.splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("ZONE", "TIMEZONE") and _looks_iana(value.strip().strip('"')):
                return value.strip().strip('"')
    localtime = probe.root / "etc/localtime"
    try:
        target = os.readlink(localtime)
    except OSError:
        target = ""
    for marker in _ZONEINFO_MARKERS:
        if marker in target:
            zone = target.split(marker, 1)[1]
            if _looks_iana(zone):
                return zone
    return None


def _looks_iana(name: str) -> bool:
    if name in ("UTC", "GMT"):
        return True
    parts = name.split("/")
    return 2 <= len(parts) <= 3 and all(_ZONE_PART.fullmatch(part) for part in parts)


def _is_android() -> bool:
    return "ANDROID_ARGUMENT" in os.environ or hasattr(sys, "getandroidapilevel")


def _android() -> dict[str, str | None]:
    # Imported here: pyjnius exists only inside python-for-android builds.
    from jnius import autoclass  # type: ignore[import-not-found]

    build = autoclass("android.os.Build")
    version = autoclass("android.os.Build$VERSION")
    # Android has no /etc/timezone and no TZ: Java knows the zone and the language.
    zone = autoclass("java.util.TimeZone").getDefault().getID()
    language = autoclass("java.util.Locale").getDefault().toString()
    return {
        "Platform": "Android",
        "PlatformVersion": str(version.RELEASE),
        "Make": str(build.MANUFACTURER),
        "Model": str(build.MODEL),
        "ModelVersion": str(version.SDK_INT),
        "Timezone": str(zone) if zone else None,
        "Locale": str(language).split("_#")[0] or None,
    }


def _windows() -> dict[str, str | None]:
    try:
        import winreg  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return {}
    found: dict[str, str | None] = {}
    try:
        key: Any = winreg.OpenKey(  # type: ignore[attr-defined,unused-ignore]
            winreg.HKEY_LOCAL_MACHINE,  # type: ignore[attr-defined,unused-ignore]
            r"HARDWARE\DESCRIPTION\System\BIOS",
        )
        with key:
            for name, value_name in (
                ("Make", "SystemManufacturer"),
                ("Model", "SystemProductName"),
            ):
                try:
                    value = str(winreg.QueryValueEx(key, value_name)[0]).strip()  # type: ignore[attr-defined,unused-ignore]
                except OSError:
                    continue
                if value.lower() not in _PLACEHOLDERS:
                    found[name] = value
    except OSError:
        pass
    return found


def _sysctl(name: str) -> str | None:
    try:
        result = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=1, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None
