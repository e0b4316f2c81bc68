"""What every `miko` command shares."""

from __future__ import annotations

import argparse

from miko_assets.resources import default_warehouse_path
from miko_assets.warehouse.warehouse import Warehouse


def open_warehouse(args: argparse.Namespace) -> Warehouse:
    warehouse = Warehouse(args.warehouse or default_warehouse_path())
    warehouse.ensure_schema()
    return warehouse
