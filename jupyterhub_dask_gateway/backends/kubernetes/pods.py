"""What a pod's status says: alive or not, and why, in words a user can act on.

Pure functions of the pod (a dict as the API sends it) and the Warning events
the namespace's watch kept for it, so they are unit-tested without a cluster.
"""

from __future__ import annotations

import re
import signal

#: Container waiting reasons that do not cure themselves: the pod will never run.
#: (ErrImagePull only when the registry said the image is not there or not for us: a
#: first pull may fail on a busy registry and work on the kubelet's next try.)
FATAL_WAITING = frozenset(
    {
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)


_PULL_REFUSED = re.compile(
    r"not found|manifest unknown|unauthorized|denied|forbidden|invalid reference", re.I
)


def _reason(reason: str | None, message: str | None) -> str:
    reason, message = (reason or "").strip(), (message or "").strip()
    if reason and message:
        return f"{reason}: {message}"
    return reason or message


def _exit(terminated: dict) -> str:
    code = terminated.get("exitCode")
    text = terminated.get("reason") or "terminated"
    if isinstance(code, int):
        if code > 128 and code - 128 in signal.valid_signals():
            text += f", exit code {code} ({signal.Signals(code - 128).name})"
        else:
            text += f", exit code {code}"
    if terminated.get("message"):
        text += f": {terminated['message'].strip()}"
    return text


def _containers(pod: dict) -> list[dict]:
    status = pod.get("status") or {}
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def pod_health(pod: dict | None, what: str, warnings=()) -> tuple[bool, str]:
    """``(alive, text)`` for the pod named ``what`` ("scheduler pod x").

    Dead: the text is why (the kubelet's or the scheduler's words). Alive: the
    text is empty, or why it is not running yet (unschedulable, pulling...), for
    the start timeout's message.
    """
    if pod is None:
        return False, f"{what} was deleted"
    last_warning = warnings[-1] if warnings else ""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    for c in _containers(pod):
        state = c.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING or (
            waiting.get("reason") == "ErrImagePull"
            and _PULL_REFUSED.search(waiting.get("message") or "")
        ):
            return (
                False,
                f"{what} cannot start: {_reason(waiting['reason'], waiting.get('message'))}",
            )
    ended = ""
    if phase in ("Failed", "Succeeded"):
        pod_reason = _reason(status.get("reason"), status.get("message"))  # e.g. Evicted
        exits = [
            _exit((c.get("state") or {}).get("terminated") or {})
            for c in _containers(pod)
            if (c.get("state") or {}).get("terminated")
        ]
        ended = pod_reason or "; ".join(exits) or phase.lower()
    if meta.get("deletionTimestamp"):
        # the deletion is the cause, whatever the process did when it was told to stop
        return False, f"{what} was deleted" + (f" ({ended})" if ended else "")
    if ended:
        return False, f"{what} ended ({ended})"
    if phase == "Pending":
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return (
                    True,
                    f"{what} is pending: {_reason(cond.get('reason'), cond.get('message'))}",
                )
        for c in _containers(pod):
            waiting = (c.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                note = _reason(waiting["reason"], waiting.get("message"))
                return True, f"{what} is pending: {note}" + (
                    f"; {last_warning}" if last_warning and last_warning not in note else ""
                )
        return True, f"{what} is pending" + (f": {last_warning}" if last_warning else "")
    return True, ""


def pod_ip(pod: dict | None) -> str:
    return ((pod or {}).get("status") or {}).get("podIP") or ""
