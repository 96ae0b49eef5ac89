"""Who the caller's bearer token stands for, so the console can show the role it acts as."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from api.deps import AUTHORIZED, Principal
from api.errors import documented
from continuity.models import Role

router = APIRouter(tags=["auth"], dependencies=AUTHORIZED)


class MePublic(BaseModel):
    # Kept next to its only route rather than in api/schemas.py, which belongs to another change.
    model_config = ConfigDict(extra="forbid")

    subject: str
    role: Role


@router.get("/me", response_model=MePublic, responses=documented(401, 403))
async def read_me(who: Principal) -> MePublic:
    return MePublic(subject=who.subject, role=who.role)


__all__ = ["MePublic", "router"]
