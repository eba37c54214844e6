"""The automatic Demographic, probed from fake system trees and injected functions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from homing._device import Probe, demographic, timezone_name


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def linux(root: Path, **overrides: object) -> Probe:
    options: dict[str, object] = {
        "root": root,
        "system": lambda: "Linux",
        "release": lambda: "6.1.0-18-amd64",
        "environ": {},
        "locale_name": lambda: "en_GB.UTF-8",
        "is_android": lambda: False,
    }
    options.update(overrides)
    return Probe(**options)  # type: ignore[arg-type]


def test_a_linux_laptop_tells_its_distribution_make_model_and_zone(tmp_path: Path) -> None:
    write(tmp_path, "etc/os-release", 'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n')
    write(tmp_path, "sys/class/dmi/id/sys_vendor", "LENOVO\n")
    write(tmp_path, "sys/class/dmi/id/product_name", "20XW0026GE\n")
    write(tmp_path, "sys/class/dmi/id/product_version", "ThinkPad X1 Carbon Gen 9\n")
    write(tmp_path, "etc/timezone", "Europe/Berlin\n")
    assert demographic("2.4.1", linux(tmp_path)) == {
        "Platform": "Linux",
        "PlatformVersion": "debian 12",
        "Make": "LENOVO",
        "Model": "20XW0026GE",
        "ModelVersion": "ThinkPad X1 Carbon Gen 9",
        "Locale": "en_GB",
        "Timezone": "Europe/Berlin",
        "AppVersion": "2.4.1",
    }


def test_bios_placeholders_are_left_out_and_a_pi_names_its_board(tmp_path: Path) -> None:
    write(tmp_path, "usr/lib/os-release", "ID=raspbian\nVERSION_ID=11\n")
    write(tmp_path, "sys/class/dmi/id/sys_vendor", "To Be Filled By O.E.M.\n")
    write(tmp_path, "sys/class/dmi/id/product_version", "System Version")
    write(tmp_path, "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
    found = demographic(None, linux(tmp_path))
    assert found["PlatformVersion"] == "raspbian 11"
    assert found["Model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert "Make" not in found and "ModelVersion" not in found and "AppVersion" not in found


def test_no_os_release_falls_back_to_the_kernel_release(tmp_path: Path) -> None:
    found = demographic(None, linux(tmp_path))
    assert found["Platform"] == "Linux"
    assert found["PlatformVersion"] == "6.1.0-18-amd64"
    assert "Timezone" not in found


@pytest.mark.parametrize(
    ("environ", "files", "link", "expected"),
    [
        ({"TZ": "America/New_York"}, {"etc/timezone": "Europe/Paris"}, None, "America/New_York"),
        ({"TZ": ":/usr/share/zoneinfo/Asia/Tokyo"}, {}, None, "Asia/Tokyo"),
        ({"TZ": "EST5EDT"}, {"etc/timezone": "Europe/Paris\n"}, None, "Europe/Paris"),
        ({}, {"etc/sysconfig/clock": 'ZONE="America/Sao_Paulo"\n'}, None, "America/Sao_Paulo"),
        ({}, {}, "/usr/share/zoneinfo/America/Argentina/Buenos_Aires",
         "America/Argentina/Buenos_Aires"),
        ({}, {}, "../usr/share/zoneinfo/Etc/UTC", "Etc/UTC"),
        ({}, {}, "/var/db/timezone/zoneinfo/Europe/Lisbon", "Europe/Lisbon"),
        ({}, {"etc/timezone": "not a zone!"}, "/etc/somewhere/else", None),
    ],
)  # fmt: skip
def test_the_iana_time_zone_comes_from_tz_files_or_the_localtime_link(
    tmp_path: Path, environ: dict[str, str], files: dict[str, str], link: str | None,
    expected: str | None,
) -> None:  # fmt: skip
    for relative, text in files.items():
        write(tmp_path, relative, text)
    if link is not None:
        (tmp_path / "etc").mkdir(exist_ok=True)
        os.symlink(link, tmp_path / "etc/localtime")
    assert timezone_name(linux(tmp_path, environ=environ)) == expected


def test_macos_and_windows_name_themselves(tmp_path: Path) -> None:
    mac = Probe(root=tmp_path, system=lambda: "Darwin", release=lambda: "23.4.0",
                mac_ver=lambda: "14.4.1", sysctl=lambda name: "MacBookPro18,3",
                environ={}, locale_name=lambda: "fr_FR", is_android=lambda: False)  # fmt: skip
    assert demographic("1", mac) == {
        "Platform": "macOS", "PlatformVersion": "14.4.1", "Make": "Apple",
        "Model": "MacBookPro18,3", "Locale": "fr_FR", "AppVersion": "1",
    }  # fmt: skip
    windows = Probe(root=tmp_path, system=lambda: "Windows", win32_ver=lambda: ("10", "10.0.19045"),
                    environ={}, locale_name=lambda: None, is_android=lambda: False)  # fmt: skip
    found = demographic(None, windows)
    assert found["Platform"] == "Windows" and found["PlatformVersion"] == "10.0.19045"
    assert "Locale" not in found


def test_the_locale_falls_back_to_the_environment_and_c_means_none(tmp_path: Path) -> None:
    probe = linux(tmp_path, locale_name=lambda: None, environ={"LANG": "pt-BR.UTF-8@euro"})
    assert demographic(None, probe)["Locale"] == "pt_BR"
    probe = linux(tmp_path, locale_name=lambda: None, environ={"LC_ALL": "C"})
    assert "Locale" not in demographic(None, probe)


def test_a_failing_probe_never_raises(tmp_path: Path) -> None:
    def broken() -> str:
        raise OSError("no")

    # On "Android" without pyjnius, the import fails; the other fields are still there.
    probe = linux(tmp_path, is_android=lambda: True, locale_name=broken)
    found = demographic("3", probe)
    assert found == {"AppVersion": "3"}


def test_android_asks_java_through_pyjnius(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pyjnius exists only inside python-for-android builds: a stand-in module answers
    # as android.os.Build and java.util would.
    import sys
    import types

    classes = {
        "android.os.Build": types.SimpleNamespace(MANUFACTURER="Google", MODEL="Pixel 8"),
        "android.os.Build$VERSION": types.SimpleNamespace(RELEASE="14", SDK_INT=34),
        "java.util.TimeZone": types.SimpleNamespace(
            getDefault=lambda: types.SimpleNamespace(getID=lambda: "Asia/Kolkata")
        ),
        "java.util.Locale": types.SimpleNamespace(
            getDefault=lambda: types.SimpleNamespace(toString=lambda: "hi_IN_#Deva")
        ),
    }
    jnius = types.ModuleType("jnius")
    jnius.autoclass = classes.__getitem__  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jnius", jnius)
    probe = linux(tmp_path, is_android=lambda: True, locale_name=lambda: None)
    assert demographic("5", probe) == {
        "Platform": "Android", "PlatformVersion": "14", "Make": "Google", "Model": "Pixel 8",
        "ModelVersion": "34", "Timezone": "Asia/Kolkata", "Locale": "hi_IN", "AppVersion": "5",
    }  # fmt: skip
