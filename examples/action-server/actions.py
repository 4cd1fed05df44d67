"""The shoe store's action server: stock and order questions answered from
the shop's systems, over Rasa's action server protocol (rasa-sdk), as
`bots/shoe-store-actions` calls them.

Run it with `scripts/action-server` (port 5055). The "systems" here are the
catalogue file the offline bot reads, so both variants answer alike; a real
shop queries its inventory and order services in these two methods.

colloquy sends an `Idempotency-Key` header that stays the same across
retries and redeliveries of one call. These two actions only read; an
action that writes (places an order, pays) keys its effect on that header.
"""

from pathlib import Path
from typing import Any, Dict, List, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from ruamel.yaml import YAML

CATALOGUE = Path(__file__).resolve().parents[2] / "bots" / "shoe-store" / "catalogue.yaml"
_tables = YAML(typ="safe").load(CATALOGUE.read_text(encoding="utf-8"))["tables"]
STOCK = {(row["model"], int(row["size"])): row for row in _tables["stock"]}
ORDERS = {str(row["order_id"]): row for row in _tables["orders"]}


def _int(value: Any) -> Any:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


class CheckStock(Action):
    def name(self) -> Text:
        return "check_stock"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        row = STOCK.get((tracker.get_slot("model"), _int(tracker.get_slot("size"))))
        if row is None:
            # No such model or size: clear what an earlier answer set, as the
            # offline lookup does, so the flow says so.
            return [SlotSet("stock", None), SlotSet("price", None)]
        return [SlotSet("stock", row["qty"]), SlotSet("price", row["price"])]


class FindOrder(Action):
    def name(self) -> Text:
        return "find_order"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        order = ORDERS.get(str(tracker.get_slot("order_id") or ""))
        if order is None:
            return [SlotSet("order_status", None), SlotSet("order_eta", None)]
        return [SlotSet("order_status", order["status"]), SlotSet("order_eta", order["eta"])]
