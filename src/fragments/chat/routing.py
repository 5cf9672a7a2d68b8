"""Model routing: an edit of an existing fragment goes to a cheaper model of the same provider.

On when the operator sets `FRAGMENTS_ROUTING`; a request opts out with `config.routing: "off"`
(None or "auto" follow the operator). A new app stays on the model the user chose, and so does
any request to the user's own server (its models are not ours to swap).
"""

from __future__ import annotations

from fragments.config import Settings
from fragments.llm.catalogue import CatalogueModel, load_catalogue
from fragments.schemas import ChatRequest


def is_edit(request: ChatRequest) -> bool:
    """The client-sent history holds an earlier answer with a fragment: this turn edits it."""
    return any(m.role == "assistant" and m.object is not None for m in request.messages)


def route_model(
    settings: Settings, request: ChatRequest, model: CatalogueModel, *, edit: bool | None = None
) -> tuple[CatalogueModel, bool]:
    """The model that answers, and whether routing changed it. `edit`: the conversation already
    has a fragment (from the client's history or the stored conversation); by default, judged
    from the client's history alone."""
    if not settings.routing or request.config.routing == "off":
        return model, False
    if edit is None:
        edit = is_edit(request)
    if request.config.base_url is not None or not edit:
        return model, False
    target_id = settings.routing_map.get(model.id)
    if target_id is None or target_id == model.id:
        return model, False
    for target in load_catalogue():
        # Same provider only (the same key and endpoint answer), and never losing image input.
        if (
            target.id == target_id
            and target.provider_id == model.provider_id
            and (target.multimodal or not model.multimodal)
        ):
            return target, True
    return model, False
