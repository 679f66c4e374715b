"""The catalog's column types and table options, defined once for the models and the migrations.

They render as plain types on SQLite and PostgreSQL; on MariaDB/MySQL they say what those engines
would otherwise get wrong. A migration imports them rather than keeping copies: they are part of
the schema's contract, and changing one would need a migration of its own anyway.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, Uuid
from sqlalchemy.dialects import mysql

#: An id column that autoincrements on every engine (SQLite only does so for INTEGER PRIMARY KEY).
AutoId = BigInteger().with_variant(Integer(), "sqlite")
#: An image id: MariaDB's own UUID type (10.7+) sorts ids in another order than Python and the
#: other engines do, and older servers lack it: 32 hex digits there, as Uuid stores them on SQLite.
Id = Uuid().with_variant(Uuid(native_uuid=False), "mysql", "mariadb")
#: A moment, UTC, to the microsecond (MariaDB's DATETIME keeps whole seconds unless told).
Moment = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
#: MariaDB/MySQL tables: any Unicode, and keys compared byte for byte as on SQLite and PostgreSQL
#: (under a case-insensitive collation `Foo` and `foo` would be one property).
TABLE_OPTIONS: dict[str, Any] = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")
    for option, value in (("charset", "utf8mb4"), ("collate", "utf8mb4_bin"))
}
