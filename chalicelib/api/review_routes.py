"""The review loop's routes (issue 21; docs/reviews.md), as data beside chalicelib/api/routes.py's
table, added to its OPERATIONS and SCOPES when this module is imported. chalicelib/api/__init__.py
imports it, so whoever reads the table through the package sees one table (and routes.py stays
under the 400 lines a shipped module may have).
"""

from __future__ import annotations

from chalicelib.api.models import Error, TaskResult
from chalicelib.api.review_models import (
    REVIEW_KINDS,
    AppealAccepted,
    AppealRequest,
    Claim,
    ReviewPage,
    Statement,
    VerdictRequest,
)
from chalicelib.api.routes import (
    _READ,
    BAD_BODY,
    BAD_PARAMETER,
    CURSOR,
    LIMIT,
    OPERATIONS,
    SCOPES,
    TASK_ID,
    TASK_NOT_FOUND,
    TOO_LARGE,
    UNAVAILABLE,
    UNSUPPORTED,
    Operation,
    Param,
    Reply,
    _error,
)
from chalicelib.domain.clients import MODERATE, SUBMIT

TAG_REVIEWS = "reviews"
KIND_FILTER = Param("kind", "query", "Only this kind: `review` (the model's review band) or `appeal`",
                    schema={"type": "string", "enum": list(REVIEW_KINDS)}, required=False)
_CONFLICT_REVIEW = _error("`lease_held`: another moderator holds the task's lease; `not_in_queue`: the task waits "
                          "for no review or appeal (decided already, or never in the review band); `four_eyes`: an "
                          "appeal of your own block goes to another moderator")
_NOT_YOURS = _error("`task_not_found`: no such task (a client without `moderate` gets this for every task not its own)")
_MODERATE_403 = ("`insufficient_scope`: the client lacks `moderate` (a client without it gets 404 for tasks not its "
                 "own, 403 for its own)")
_CONSOLE_FILE = "The moderator console (docs/reviews.md#the-moderator-console): served by this API, works offline"
OPERATIONS.update({
    ("GET", "/moderation/reviews"): Operation(
        "review_queue",
        "The review queue: tasks waiting for a person, oldest first",
        TAG_REVIEWS,
        {
            200: Reply("A page of queued tasks with the ad, the seller and the model's verdict (empty when none wait)",
                       ReviewPage),
            400: Reply("`invalid_parameter`: a bad kind, limit or cursor (`parameter` names which)", Error),
            503: UNAVAILABLE,
        },
        description="The model's review band and the appeals of blocks, oldest (lowest task id) first, in keyset "
        "pages. A task another moderator holds a live lease on is not listed; nor an appeal of your own block.",
        params=(KIND_FILTER, LIMIT, CURSOR),
    ),
    ("POST", "/moderation/reviews/{task_id}/claim"): Operation(
        "review_claim",
        "Claim a queued task: a lease (REVIEW_LEASE_SECONDS, 600) during which only you may decide it",
        TAG_REVIEWS,
        {
            200: Reply("The lease. Claiming your own live lease again renews it.", Claim),
            400: BAD_PARAMETER,
            403: Reply(_MODERATE_403, Error),
            404: _NOT_YOURS,
            409: _CONFLICT_REVIEW,
            503: UNAVAILABLE,
        },
        description="An expired lease puts the task back in the queue; the next claim records `lease_expired` in the "
        "trail.",
        params=(TASK_ID,),
    ),
    ("POST", "/moderation/reviews/{task_id}/verdict"): Operation(
        "review_verdict",
        "The lease holder's verdict: allow or block, with a reason code",
        TAG_REVIEWS,
        {
            200: Reply("The task as the result route now shows it: `decided_by` human", TaskResult),
            400: Reply("`invalid_body`: not JSON, or a bad decision, an unknown reason code, a note over 2,000 "
                       "characters; or `invalid_parameter`: a bad task_id", Error),
            403: Reply(_MODERATE_403, Error),
            404: _NOT_YOURS,
            409: _error("`lease_required`: you hold no live lease on the task (claim it; it may have expired); "
                        "`not_in_queue`: it waits for no verdict; `four_eyes`: an appeal of your own block"),
            413: TOO_LARGE,
            415: UNSUPPORTED,
            503: UNAVAILABLE,
        },
        params=(TASK_ID,),
        body=VerdictRequest,
    ),
    ("POST", "/moderation/appeals"): Operation(
        "appeal",
        "Appeal a block of your own task, once, within APPEAL_WINDOW_DAYS (14)",
        TAG_REVIEWS,
        {
            202: Reply("Accepted: the appeal is in the review queue; a moderator other than the one who blocked the "
                       "ad decides it (the result's `appeal` says the outcome)", AppealAccepted),
            400: BAD_BODY,
            404: _error("`task_not_found`: no such task of yours"),
            409: _error("`not_blocked`: the task is not blocked; `already_appealed`: it was appealed before; "
                        "`appeal_window_closed`: decided too long ago"),
            413: TOO_LARGE,
            415: UNSUPPORTED,
            503: UNAVAILABLE,
        },
        body=AppealRequest,
    ),
    ("GET", "/moderation/moderation_result/{task_id}/statement"): Operation(
        "statement",
        "The statement of reasons of a block (DSA Art. 17), in the DSA Transparency Database's field names",
        TAG_REVIEWS,
        {
            200: Reply("The statement", Statement),
            400: BAD_PARAMETER,
            404: TASK_NOT_FOUND,
            409: _error("`not_blocked`: the task is not blocked (no restriction, no statement)"),
            503: UNAVAILABLE,
        },
        params=(TASK_ID,),
    ),
    ("GET", "/console"): Operation("console", "The moderator console (an HTML page)", TAG_REVIEWS,
                                   {200: Reply(_CONSOLE_FILE, media_type="text/html")}),
    ("GET", "/console/console.js"): Operation("console_script", "The console's script", TAG_REVIEWS,
                                              {200: Reply(_CONSOLE_FILE, media_type="application/javascript")}),
    ("GET", "/console/console.css"): Operation("console_stylesheet", "The console's stylesheet", TAG_REVIEWS,
                                               {200: Reply(_CONSOLE_FILE, media_type="text/css")}),
})
# claim and verdict let `submit` clients in only to answer them 404 for tasks not their own
# (chalicelib/api/reviews.py): the design's rule that another client's task does not exist.
_ACT = frozenset({MODERATE, SUBMIT})
SCOPES.update({
    ("GET", "/moderation/reviews"): frozenset({MODERATE}),
    ("POST", "/moderation/reviews/{task_id}/claim"): _ACT,
    ("POST", "/moderation/reviews/{task_id}/verdict"): _ACT,
    ("POST", "/moderation/appeals"): frozenset({SUBMIT}),
    ("GET", "/moderation/moderation_result/{task_id}/statement"): _READ,
    ("GET", "/console"): None,
    ("GET", "/console/console.js"): None,
    ("GET", "/console/console.css"): None,
})
