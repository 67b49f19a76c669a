"""Create the local secrets a fresh checkout needs, with strong random values; never overwrite one."""

import secrets
import sys
from pathlib import Path

# gateway_admin_keys is the containers' gateway's admin key (docker-compose.chat.yaml mounts it): not named
# chat_admin_keys, which the gateway would read from secrets/ itself, so `make run` stays in open mode.
GENERATED = ("api_key", "db_password", "gateway_admin_keys")


def main(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in GENERATED:
        path = directory / f"{name}.txt"
        if path.exists():
            continue
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
        print(f"created {path} (random value)")  # noqa: T201


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "secrets"))
