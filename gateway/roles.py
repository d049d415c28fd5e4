"""The role each public method needs: readers look, writers add and annotate, admins delete.

A method missing here needs admin (:class:`orbithash_serving.access.TokenAdmission`), so a new
method stays closed until it is given a role on purpose.
"""

from __future__ import annotations

from orbithash_serving.access import Role

METHOD_ROLES: dict[str, Role] = {
    "Search": Role.READER,
    "SearchMany": Role.READER,
    "Get": Role.READER,
    "Info": Role.READER,
    "Ingest": Role.WRITER,
    "UpdateMetadata": Role.WRITER,
    "Delete": Role.ADMIN,
}
