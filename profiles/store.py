"""The profile store: the only module of `profiles` that talks to MongoDB."""

from pymongo import ASCENDING, DESCENDING, IndexModel

PROFILES = "profiles"
TRAIT_HISTORY = "trait_history"

INDEXES = {
    PROFILES: [
        IndexModel([("segments", ASCENDING)], name="segments"),
        IndexModel([("stats.last_seen", DESCENDING)], name="last_seen"),
        IndexModel([("next_eval_at", ASCENDING)], name="next_eval_at", sparse=True),
    ],
    TRAIT_HISTORY: [
        IndexModel(
            [("profile_id", ASCENDING), ("key", ASCENDING), ("observed_at", ASCENDING)],
            name="profile_key_time",
        ),
    ],
}
