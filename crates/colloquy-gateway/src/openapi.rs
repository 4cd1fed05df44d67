//! The OpenAPI 3 document of the HTTP API, served at `/v1/openapi.json`.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn user_param() -> Value {
    json!({"name": "user", "in": "path", "required": true,
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9._@:-]{1,128}$"}})
}

pub fn document() -> Value {
    let auth_errors = json!({
        "400": error_response("Invalid input: malformed JSON, missing fields, bad UTF-8, empty or overlong text, bad user id"),
        "401": error_response("Missing, malformed, expired or wrongly signed token"),
        "403": error_response("The token may not act for this user"),
    });
    let with = |extra: Value| {
        let mut m = auth_errors.as_object().cloned().unwrap_or_default();
        m.extend(extra.as_object().cloned().unwrap_or_default());
        Value::Object(m)
    };
    json!({
        "openapi": "3.0.3",
        "info": {"title": "colloquy", "version": env!("CARGO_PKG_VERSION"),
                 "description": "A conversational backend: send user messages, receive bot replies, read the event log."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "MessageIn": {"type": "object", "required": ["text"], "additionalProperties": false, "properties": {
                    "text": {"type": "string", "minLength": 1, "maxLength": 4000},
                    "id": {"type": "string", "description": "Client message id (idempotency key)", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}}},
                "Accepted": {"type": "object", "required": ["event_id", "message_id", "seq"], "properties": {
                    "event_id": {"type": "string", "format": "uuid", "description": "Id the user's event will have in the log"},
                    "message_id": {"type": "string"},
                    "seq": {"type": "integer", "description": "Position of the message in the durable inbound queue"}}},
                "Replied": {"allOf": [{"$ref": "#/components/schemas/Accepted"}, {"type": "object", "properties": {
                    "log_seq": {"type": "integer", "description": "The user's last event seq after this turn"},
                    "replies": {"type": "array", "items": {"type": "string"}}}}]},
                "Event": {"type": "object", "required": ["event_id", "user_id", "seq", "ts_ms", "bot", "type"],
                    "additionalProperties": true, "properties": {
                    "event_id": {"type": "string", "format": "uuid"}, "user_id": {"type": "string"},
                    "seq": {"type": "integer"}, "ts_ms": {"type": "integer"},
                    "bot": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
                    "type": {"type": "string", "enum": ["session_started", "user_said", "intent_recognised", "slot_set",
                        "slot_cleared", "slot_rejected", "flow_started", "flow_step", "flow_ended", "action_called",
                        "handed_off", "bot_said", "route_changed"]}}},
                "Route": {"type": "object", "nullable": true, "description": "The bot version the user's turns go to, and why", "properties": {
                    "version": {"type": "string"},
                    "reason": {"type": "string", "enum": ["stable", "canary", "pinned"]},
                    "tail": {"type": "integer", "minimum": 0, "maximum": 9, "description": "The user id's last digit, or the last digit of its FNV-1a hash"}}},
                "Rollout": {"type": "object", "required": ["stable"], "properties": {
                    "stable": {"type": "string"},
                    "canary": {"type": "object", "nullable": true, "required": ["version", "tails"], "properties": {
                        "version": {"type": "string"},
                        "tails": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}}}},
                    "withdrawn": {"type": "array", "items": {"type": "string"}, "description": "Versions rolled back: no session stays pinned on them"},
                    "guards": {"type": "array", "items": {"$ref": "#/components/schemas/Guard"}}}},
                "Guard": {"type": "object", "required": ["metric", "max_increase"],
                    "description": "A limit on the canary: when its figure over the last `window` exceeds stable's by more than `max_increase`, once it answered `min_turns` turns in that window, the canary is rolled back by itself (history action `guard`, the figures in its note). Counted per process over the turns it answered.",
                    "properties": {
                        "metric": {"type": "string", "enum": ["fallback_rate", "handoff_rate", "action_error_rate", "p99_ms"]},
                        "max_increase": {"type": "number", "minimum": 0, "description": "Rate points for a rate (0.2 = 20 points), milliseconds for p99_ms"},
                        "window": {"type": "string", "default": "60s", "description": "A duration from 1s to 10m"},
                        "min_turns": {"type": "integer", "minimum": 1, "default": 20}}},
                "RolloutStatus": {"type": "object", "properties": {
                    "rollout": {"type": "object", "properties": {
                        "name": {"type": "string"}, "generation": {"type": "integer"},
                        "rollout": {"$ref": "#/components/schemas/Rollout"},
                        "action": {"type": "string", "enum": ["set", "promote", "rollback", "guard", "local"]},
                        "by": {"type": "string"}, "at_ms": {"type": "integer"}, "note": {"type": "string"}}},
                    "processes": {"type": "array", "description": "Every live process (reported within 15 s) and whether it activated this generation",
                        "items": {"type": "object", "properties": {
                            "process": {"type": "string"}, "generation": {"type": "integer"},
                            "status": {"type": "string", "enum": ["active", "failed", "pending"]},
                            "error": {"type": "string", "nullable": true}}}},
                    "versions": {"type": "object", "description": "Per version, the last minute of the live processes added up",
                        "additionalProperties": {"type": "object", "properties": {
                            "users": {"type": "integer"}, "turns": {"type": "integer"},
                            "fallback_rate": {"type": "number", "nullable": true},
                            "handoff_rate": {"type": "number", "nullable": true},
                            "action_error_rate": {"type": "number", "nullable": true},
                            "p99_ms": {"type": "number", "nullable": true}}}}}},
                "VersionInfo": {"type": "object", "properties": {
                    "name": {"type": "string"}, "version": {"type": "string"},
                    "hash": {"type": "string", "description": "SHA-256 of the files (hex)"},
                    "pushed_at_ms": {"type": "integer"}, "pushed_by": {"type": "string"}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/conversations/{user}/messages": {"post": {
                "summary": "Send a user message",
                "parameters": [user_param(), {"name": "wait_ms", "in": "query", "required": false,
                    "schema": {"type": "integer", "minimum": 0, "maximum": 10000},
                    "description": "Wait up to this long for the replies"}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageIn"}}}},
                "responses": with(json!({
                    "200": {"description": "Replies to the message (when waiting)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Replied"}}}},
                    "202": {"description": "Durably queued", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                    "413": error_response("Body larger than 64 KiB"),
                    "422": error_response("Text refused by the content policy"),
                    "429": error_response("Over the user's or the token's message rate (rate_limited; see Retry-After)"),
                    "503": error_response("Queue full (see Retry-After) or unavailable"),
                }))}},
            "/v1/conversations/{user}/events": {"get": {
                "summary": "Read the user's event log (sensitive values masked)",
                "parameters": [user_param(),
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                "responses": with(json!({"200": {"description": "A page of events", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "next_after": {"type": "integer", "nullable": true}}}}}}}))}},
            "/v1/conversations/{user}/state": {"get": {
                "summary": "The user's current state: slots, active flow, session",
                "parameters": [user_param()],
                "responses": with(json!({"200": {"description": "State", "content": {"application/json": {"schema": {"type": "object",
                    "properties": {"route": {"$ref": "#/components/schemas/Route"}}}}}}}))}},
            "/v1/bots": {
                "post": {"summary": "Admin: push a bot version (its name and version are those of its `bot:` section)",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["files"],
                        "properties": {"files": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "Path inside the bot directory (`/`-separated, *.yaml) → YAML text"}}}}}},
                    "responses": with(json!({
                        "201": {"description": "Pushed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/VersionInfo"}}}},
                        "200": {"description": "The same version with the same files was there already"},
                        "409": error_response("That version exists with other files (version_exists)"),
                        "413": error_response("Larger than limits.max_bot_bytes"),
                        "422": error_response("The bot does not compile (invalid_bot); error.details.errors lists file, line, field and message")}))},
                "get": {"summary": "Admin: list bot versions",
                    "parameters": [{"name": "bot", "in": "query", "schema": {"type": "string"}, "description": "Only this bot's"}],
                    "responses": with(json!({"200": {"description": "Versions, oldest first", "content": {"application/json": {"schema": {"type": "object",
                        "properties": {"versions": {"type": "array", "items": {"$ref": "#/components/schemas/VersionInfo"}}}}}}}}))}},
            "/v1/bots/{name}/versions/{version}": {"get": {"summary": "Admin: a version with its files",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "version", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with(json!({"200": {"description": "The version"}, "404": error_response("No such version")}))}},
            "/v1/bots/{name}/rollout": {
                "get": {"summary": "Admin: the bot's rollout and each live process's activation",
                    "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": with(json!({"200": {"description": "Rollout", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RolloutStatus"}}}},
                        "404": error_response("No rollout yet")}))},
                "put": {"summary": "Admin: set the rollout; answers once every live process activated it (or failed to), or after 3 s",
                    "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["stable"], "properties": {
                        "stable": {"type": "string"},
                        "canary": {"type": "object", "properties": {"version": {"type": "string"}, "tails": {"type": "array", "items": {"type": "integer"}}}},
                        "guards": {"type": "array", "items": {"$ref": "#/components/schemas/Guard"}, "description": "Only with a canary; promote and rollback drop them"},
                        "expected_generation": {"type": "integer", "description": "Refuse (409) if the rollout moved on since this generation"}}}}}},
                    "responses": with(json!({"200": {"description": "Set", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RolloutStatus"}}}},
                        "404": error_response("A version it names was never pushed (unknown_version)"),
                        "409": error_response("The rollout changed meanwhile (rollout_changed)"),
                        "422": error_response("Tails not 0-9, no tails, canary equal to stable, or a guard out of range or without a canary")}))}},
            "/v1/bots/{name}/promote": {"post": {"summary": "Admin: the canary becomes stable; running sessions finish on their version",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with(json!({"200": {"description": "Promoted", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RolloutStatus"}}}},
                    "409": error_response("No canary (no_canary)")}))}},
            "/v1/bots/{name}/rollback": {"post": {"summary": "Admin: withdraw the canary, or without one the stable version for the one before it; its users move at their next turn",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with(json!({"200": {"description": "Rolled back", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RolloutStatus"}}}},
                    "409": error_response("Nothing to roll back to (nothing_to_roll_back)")}))}},
            "/v1/audit": {"get": {"summary": "Admin: the audit log of admin actions (push, rollout, promote, rollback; refused ones too), newest first: at_ms, by (token subject), from (client address), action, bot, outcome",
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                "responses": with(json!({"200": {"description": "Audit entries"}}))}},
            "/v1/bots/{name}/history": {"get": {"summary": "Admin: the rollout's generations, newest first",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                "responses": with(json!({"200": {"description": "History"}}))}},
            "/v1/stream": {"get": {
                "summary": "WebSocket: send {\"type\":\"message\",\"text\":...,\"id\":...}; the server answers {\"type\":\"accepted\"}, pushes each bot line as {\"type\":\"reply\",\"seq\",\"message_id\",\"text\"} and closes a turn with {\"type\":\"done\",\"message_id\",\"seq\",\"replies\"}; errors come as {\"type\":\"error\",\"error\":{\"code\",\"message\"}}",
                "parameters": [
                    {"name": "token", "in": "query", "schema": {"type": "string"}, "description": "JWT, when no Authorization header can be sent"},
                    {"name": "user", "in": "query", "schema": {"type": "string"}, "description": "Admin tokens only: whose stream"},
                    {"name": "after", "in": "query", "schema": {"type": "integer"}, "description": "Deliver replies after this event seq first"}],
                "responses": with(json!({
                    "101": {"description": "Switching to WebSocket. The server pings; a session ends with close code 1000 (reason `idle`) after limits.ws_idle_timeout without a message, and with 1008 (`token expired`) when its token expires"},
                    "429": error_response("The user already holds limits.max_sessions_per_user sessions (too_many_sessions; see Retry-After)"),
                    "503": error_response("Every connection slot is taken (too_many_connections; see Retry-After)")}))}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {"get": {"summary": "Readiness", "security": [], "responses": {"200": {"description": "Ready"}, "503": error_response("Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "OpenMetrics text"}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3"}}}}
        }
    })
}
