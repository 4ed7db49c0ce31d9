# The compiled helper (backends/_spawn.c); see its docstring.
HAS_CLONE3: int

def spawn(
    path: bytes,
    argv: list[bytes],
    envp: list[bytes],
    cwd: bytes | None,
    stdin: int,
    stdout: int,
    stderr: int,
    cgroup_folder_fd: int,
    own_group: bool,
    nice: int,
    max_fd: int,
    /,
) -> int: ...
def clone3_state(allow: bool | None = None, /) -> tuple[bool, int]: ...
