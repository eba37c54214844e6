"""The simulated shop: its countries, devices, versions, catalogue and campaigns."""

from __future__ import annotations

APP_PACKAGE = "com.example.homingshop"
APP_TITLE = "Homing Shop"

# (country, weight, locales, time zone, the currency its store charges in)
COUNTRIES = [
    ("US", 30, ["en_US", "es_US"], "America/New_York", "USD"),
    ("DE", 12, ["de_DE"], "Europe/Berlin", "EUR"),
    ("GB", 10, ["en_GB"], "Europe/London", "GBP"),
    ("FR", 9, ["fr_FR"], "Europe/Paris", "EUR"),
    ("BR", 9, ["pt_BR"], "America/Sao_Paulo", "USD"),
    ("IN", 8, ["en_IN", "hi_IN"], "Asia/Kolkata", "USD"),
    ("JP", 7, ["ja_JP"], "Asia/Tokyo", "USD"),
    ("ES", 6, ["es_ES"], "Europe/Madrid", "EUR"),
    ("CA", 5, ["en_CA", "fr_CA"], "America/Toronto", "USD"),
    ("NL", 4, ["nl_NL"], "Europe/Amsterdam", "EUR"),
]
# (platform, weight, channel, platform versions, [(make, model)])
PLATFORMS = [
    ("iOS", 44, "APNS", ["18.1", "17.6", "17.5", "16.7"],
     [("Apple", "iPhone 15"), ("Apple", "iPhone 15 Pro"), ("Apple", "iPhone 14"),
      ("Apple", "iPhone 13"), ("Apple", "iPad Air")]),
    ("Android", 48, "GCM", ["15", "14", "13", "12"],
     [("Samsung", "Galaxy S24"), ("Samsung", "Galaxy A54"), ("Google", "Pixel 8"),
      ("Xiaomi", "Redmi Note 13"), ("OnePlus", "12R"), ("Motorola", "moto g84")]),
    ("Linux", 8, "CUSTOM", ["6.1", "6.6"],
     [("Raspberry Pi", "Pi 5"), ("Dell", "OptiPlex 7010")]),
]  # fmt: skip
APP_VERSIONS = [("3.2.0", 45), ("3.1.4", 30), ("3.0.2", 15), ("2.9.8", 10)]
CATEGORIES = ["shoes", "books", "garden", "kitchen", "toys", "audio"]
SCREENS = ["home", "search", "product", "cart", "profile", "settings"]
PAYMENTS = ["card", "paypal", "wallet"]
PRICES = {"shoes": 79.0, "books": 14.5, "garden": 32.0, "kitchen": 24.9, "toys": 19.9,
          "audio": 129.0}  # fmt: skip
# (campaign id, days before the last day it is sent, hour UTC, open rate)
CAMPAIGNS = [("welcome-back", 30, 17, 0.18), ("weekend-sale", 9, 9, 0.27)]

# The demo's stored campaigns (Pinpoint's CreateCampaign shape; demo/__init__.py stores
# them), whose sends and opens are in the simulated history too:
# an A/B campaign sent once, with a holdout: (name, days before the last day, hour UTC,
# holdout percent, [(treatment name, SizePercent of an additional treatment or None for
# treatment 0, open rate)]);
AB_CAMPAIGN = ("Spring sale A/B", 5, 12, 20, [("control", None, 0.16), ("discount", 40, 0.3)])
# a live event-triggered campaign, on each cart.add of a push device, once a day at most:
# (name, event type, days before the last day it started, open rate).
EVENT_CAMPAIGN = ("Cart reminder", "cart.add", 21, 0.22)
