"""A scriptable stand-in agent for the `command` backend (a real process, stdlib only).

Behaviour per task comes from <session>/behaviors.json, e.g.
{"A-002": {"exit": 3}, "A-003": {"hang": true}, "default": {"sleep": 0.2}}.
Keys: sleep (s), exit (code), hang (sleep silently for an hour; hang_attempts: only the
first N attempts), chatter (print for
an hour), spam_mb (print N MB), fail_times (fail the first N attempts),
report (JSON object written to $TEAM_EXECUTOR_REPORT; report_attempts: only the first N
attempts), save_prompt (copy the prompt to artifacts/<task>-prompt-<attempt>.md), write_file
({"path": ..., "text": ...} in the working directory), run (an argv run in the working
directory; a failure fails the agent), grandchild (spawn a
detached `sleep 600` in its own session first), signal (kill itself with it), mark (a folder:
create <task>-a<attempt>-<pid> in it first thing, so a test can count executions), kill_parent
({"dir": ..., "times": N}: the first N executions to claim a kill-<n> file in dir SIGKILL the
executor that started them, right after their mark), ignore_term (SIGTERM does nothing: the
executor's stop waits out its grace period, then SIGKILLs).
"""

import json
import os
import signal
import subprocess
import sys
import time

task = os.environ["TEAM_EXECUTOR_TASK_ID"]
session = os.environ["TEAM_EXECUTOR_SESSION"]
attempt = int(os.environ.get("TEAM_EXECUTOR_ATTEMPT", "1"))
with open(os.path.join(session, "behaviors.json")) as handle:
    behaviors = json.load(handle)
behavior = behaviors.get(task, behaviors.get("default", {}))

if behavior.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if behavior.get("mark"):
    open(os.path.join(behavior["mark"], f"{task}-a{attempt}-{os.getpid()}"), "x").close()
if behavior.get("kill_parent"):
    for n in range(behavior["kill_parent"]["times"]):
        try:
            open(os.path.join(behavior["kill_parent"]["dir"], f"kill-{n}"), "x").close()
        except FileExistsError:
            continue
        os.kill(os.getppid(), 9)
        break
print(json.dumps({"type": "progress", "percent": 10, "note": f"{task} starting"}), flush=True)
if behavior.get("grandchild"):
    subprocess.Popen(["sleep", "600"], start_new_session=True)
if behavior.get("signal"):
    os.kill(os.getpid(), behavior["signal"])
if behavior.get("fail_times", 0) >= attempt:
    print(f"{task}: failing attempt {attempt} on purpose", file=sys.stderr)
    sys.exit(7)
if "exit" in behavior:
    print(f"{task}: exiting with {behavior['exit']}", file=sys.stderr)
    sys.exit(behavior["exit"])
if behavior.get("hang") or behavior.get("hang_attempts", 0) >= attempt:
    time.sleep(3600)
if behavior.get("chatter"):
    while True:
        print("still working", flush=True)
        time.sleep(0.05)
if behavior.get("spam_mb"):
    line = "x" * 1023 + "\n"
    for _ in range(behavior["spam_mb"] * 1024):
        sys.stdout.write(line)
    sys.stdout.flush()
time.sleep(behavior.get("sleep", 0))
artifact = os.path.join(os.environ["TEAM_EXECUTOR_ARTIFACTS"], f"{task}-out.md")
with open(artifact, "a") as handle:
    handle.write(f"{task} attempt {attempt} pid {os.getpid()}\n")
if "write_file" in behavior:
    with open(behavior["write_file"]["path"], "w") as handle:
        handle.write(behavior["write_file"]["text"])
if "run" in behavior:
    subprocess.run(behavior["run"], check=True)
if behavior.get("save_prompt"):
    with open(os.environ["TEAM_EXECUTOR_PROMPT_FILE"]) as source:
        prompt = source.read()
    with open(os.path.join(os.environ["TEAM_EXECUTOR_ARTIFACTS"], f"{task}-prompt-{attempt}.md"), "w") as copy:
        copy.write(prompt)
if "report" in behavior and behavior.get("report_attempts", attempt) >= attempt:
    with open(os.environ["TEAM_EXECUTOR_REPORT"], "w") as handle:
        json.dump(behavior["report"], handle)
print(f"[worker] {task} done", flush=True)
