"""The shoe store's action server: stock and order questions answered from
the shop's systems, over Rasa's action server protocol (rasa-sdk), as
`bots/shoe-store-actions` calls them.

Run it with `scripts/action-server` (port 5055). The "systems" here are the
catalogue file the offline bot reads, so both variants answer alike; a real
shop queries its inventory and order services in these two methods.

colloquy sends an `Idempotency-Key` header that stays the same across
retries and redeliveries of one call. The stock and order actions only
read; the payment actions of the red packet saga (below) key their effects
on it.
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


# The payment service of the lottery's cash red packets (the `red_packet`
# saga of bots/shoe-store-actions/red-packet.yaml). An in-memory stand-in
# for the shop's payment API, which keys every effect by the call's
# idempotency key: a repeated call (a retry, or a redelivery after a crash)
# gets the first answer and moves no money again.
BUDGET = {"left": 1000}
RESERVATIONS: Dict[Text, int] = {}
PACKETS: Dict[Text, int] = {}
ANSWERS: Dict[Text, List[Dict[Text, Any]]] = {}


def idempotency_key(tracker: Tracker) -> Text:
    """The key colloquy sends for this call: rasa-sdk does not hand an
    action the request's headers, so colloquy puts it on the tracker's
    latest `action` event as well."""
    for event in reversed(tracker.events):
        if event.get("event") == "action" and event.get("idempotency_key"):
            return event["idempotency_key"]
    raise ValueError("no idempotency key in the tracker")


class _Payment:
    """Runs `pay` once per idempotency key, and answers repeats alike. Not
    an Action itself: rasa-sdk registers every Action subclass by name."""

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        key = idempotency_key(tracker)
        if key not in ANSWERS:
            ANSWERS[key] = self.pay(key, tracker)
        return ANSWERS[key]


class ReserveBudget(_Payment, Action):
    def name(self) -> Text:
        return "reserve_budget"

    def pay(self, key: Text, tracker: Tracker) -> List[Dict[Text, Any]]:
        amount = 10
        if BUDGET["left"] < amount:
            raise RuntimeError("the campaign budget is spent")
        BUDGET["left"] -= amount
        RESERVATIONS[key] = amount
        return [SlotSet("reservation", key), SlotSet("red_packet_amount", amount)]


class ReleaseBudget(_Payment, Action):
    def name(self) -> Text:
        return "release_budget"

    def pay(self, key: Text, tracker: Tracker) -> List[Dict[Text, Any]]:
        BUDGET["left"] += RESERVATIONS.pop(tracker.get_slot("reservation"), 0)
        return [SlotSet("reservation", None)]


class GrantRedPacket(_Payment, Action):
    def name(self) -> Text:
        return "grant_red_packet"

    def pay(self, key: Text, tracker: Tracker) -> List[Dict[Text, Any]]:
        PACKETS[key] = RESERVATIONS[tracker.get_slot("reservation")]
        return [SlotSet("red_packet", key)]


class RevokeRedPacket(_Payment, Action):
    def name(self) -> Text:
        return "revoke_red_packet"

    def pay(self, key: Text, tracker: Tracker) -> List[Dict[Text, Any]]:
        PACKETS.pop(tracker.get_slot("red_packet"), None)
        return [SlotSet("red_packet", None)]


class NotifyWinner(_Payment, Action):
    def name(self) -> Text:
        return "notify_winner"

    def pay(self, key: Text, tracker: Tracker) -> List[Dict[Text, Any]]:
        # A real shop sends an SMS or an app notification here.
        return []
