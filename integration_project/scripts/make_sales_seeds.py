"""Writes seeds/sales_items.csv, sales_stores.csv and sales_observations.csv: grocery unit sales by
item and store in the spirit of the Favorita data the sql4ml paper uses (run once; CSVs committed).
Sales depend on the item's family, the store's city, promotion and perishability."""
import os

import numpy as np

rng = np.random.default_rng(7)
FAMILIES = ["bakery", "beverages", "cleaning", "dairy", "deli", "grocery", "meats", "produce"]
CITIES = ["Cuenca", "Guayaquil", "Machala", "Quito", "Santo Domingo"]
family_effect = dict(zip(FAMILIES, rng.normal(0, 3, len(FAMILIES))))
city_effect = dict(zip(CITIES, rng.normal(0, 1.5, len(CITIES))))
items = [(i, FAMILIES[i % len(FAMILIES)], int(FAMILIES[i % len(FAMILIES)] in ("bakery", "dairy", "meats", "produce")))
         for i in range(1, 41)]
stores = [(s, CITIES[(s - 1) % len(CITIES)]) for s in range(1, 11)]
here = os.path.join(os.path.dirname(__file__), "..", "seeds")
with open(os.path.join(here, "sales_items.csv"), "w") as f:
    f.write("item_id,family,perishable\n" + "".join(f"{i},{fam},{p}\n" for i, fam, p in items))
with open(os.path.join(here, "sales_stores.csv"), "w") as f:
    f.write("store_id,city\n" + "".join(f"{s},{c}\n" for s, c in stores))
with open(os.path.join(here, "sales_observations.csv"), "w") as f:
    f.write("obs_id,sale_date,item_id,store_id,onpromotion,unit_sales\n")
    for o in range(1, 4001):
        item, store = items[rng.integers(len(items))], stores[rng.integers(len(stores))]
        promo = int(rng.random() < 0.2)
        sales = 12 + family_effect[item[1]] + city_effect[store[1]] + 2.0 * promo - 1.0 * item[2]
        day = f"2026-{1 + o % 12:02d}-{1 + o % 28:02d}"
        f.write(f"{o},{day},{item[0]},{store[0]},{promo},{max(0.0, sales + rng.normal(0, 0.8)):.2f}\n")
