"""Actions written for colloquy's tests (crates/colloquy/tests/actions.rs),
run by an unmodified rasa-sdk action server: named responses with
variables, buttons and custom payloads, a followup, and a rejection."""

from typing import Any, Dict, List, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.interfaces import ActionExecutionRejection


class Quote(Action):
    def name(self) -> Text:
        return "quote"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        model = tracker.get_slot("model") or "none"
        intent = tracker.latest_message.get("intent", {}).get("name")
        # What colloquy sent: the model slot, the latest intent, the domain.
        assert "utter_price" in domain["responses"], domain
        dispatcher.utter_message(response="utter_price", price=399)
        dispatcher.utter_message(
            text=f"{model} for {intent}?",
            buttons=[{"title": "yes", "payload": "/affirm"}],
            json_message={"card": model},
        )
        return [SlotSet("price", 399), FollowupAction("note")]


class Note(Action):
    def name(self) -> Text:
        return "note"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        return [SlotSet("noted", True)]


class RejectMe(Action):
    def name(self) -> Text:
        return "reject_me"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        raise ActionExecutionRejection("reject_me", "not today")
