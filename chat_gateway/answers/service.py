"""Chats and answers: start one, attach to it, follow it, cancel it, resume it (crash recovery: recovery.py)."""

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator

from cachetools import TTLCache
from openai.types.chat import ChatCompletionMessageParam

from chat_gateway.answers.events import StreamEvent
from chat_gateway.answers.follower import TERMINAL, Follower
from chat_gateway.answers.generation import Generation
from chat_gateway.answers.lease import Lease, lease_is_live
from chat_gateway.answers.log import AnswerLog
from chat_gateway.answers.opening import Opening, Opens
from chat_gateway.answers.plan import ChatPlan
from chat_gateway.answers.turns import ChatIds, build_turn, chat_ids, over_budget, resume_account, turn_refused
from chat_gateway.auth.identity import ANYONE, Caller
from chat_gateway.clients import retry
from chat_gateway.clients.persistence import PersistenceClient
from chat_gateway.config import Settings
from chat_gateway.metrics import RESUMES
from chat_gateway.upstreams.registry import Upstreams
from chat_gateway.upstreams.route import Route
from shared import (
    CANCELLED,
    BadRequest,
    Conflict,
    ErrorCode,
    MessageRole,
    MessageStatus,
    OffsetMismatch,
    PreconditionFailed,
    ServiceUnavailable,
)
from shared.contract import MessageDetail, MessageUpdate, TurnCreate
from shared.identity import TurnAccount

logger = logging.getLogger(__name__)

NOT_STARTED = "abandoned before it began: its gateway never confirmed it"  # set by crash recovery (recovery.py)
NO_UPSTREAM = (
    "no upstream key is configured: set OPENAI_API_KEY, or OPENAI_API_KEY_FILE to a file holding it, "
    "or write it to secrets/openai_api_key.txt (any value for a local server that needs none)"
)


def failed_update(error: str) -> MessageUpdate:
    return MessageUpdate(status=MessageStatus.FAILED, error=error)


class Answers:
    """The answers this instance generates, and every way to reach an answer wherever it is generated."""

    def __init__(
        self,
        settings: Settings,
        persistence: PersistenceClient,
        upstreams: Upstreams,
        log: AnswerLog | None = None,
    ) -> None:
        self.settings = settings
        self.persistence = persistence
        self.upstreams = upstreams
        self.log = log
        self._live: dict[uuid.UUID, Generation] = {}
        self._follower = Follower(settings, persistence, self._live)
        self._claiming: set[uuid.UUID] = set()
        self._starting: dict[uuid.UUID, int] = {}  # answers whose turns this gateway is storing (how many times)
        # The request keys of the OpenAI clients' requests stored lately, to tell a likely retry (start_chat): for
        # at least ten minutes, since an answer still being generated is attached to whatever the window.
        self._requests: TTLCache[str, bool] = TTLCache(maxsize=10_000, ttl=max(settings.retry_window_seconds, 600))
        self.draining = False

    def _require_route(self, model: str | None, *, stored: bool = False) -> Route:
        """The route of ``model`` (``stored``: of a stored answer, see ``Upstreams.route``): 404 when no upstream
        serves it, 503 when there is none, or while shutting down."""
        if self.draining:
            raise ServiceUnavailable("this gateway is shutting down: retry on another", code=ErrorCode.SHUTTING_DOWN)
        if not self.upstreams.configured:
            raise ServiceUnavailable(NO_UPSTREAM, code=ErrorCode.NO_UPSTREAM)
        return self.upstreams.route(model, stored=stored)

    async def start_chat(self, plan: ChatPlan, idempotency_key: str | None) -> MessageDetail:
        """Store the question and its answer, and start generating it (or attach to it, on a retry).

        One request to persistence stores the turn with the answer claimed. When the prompt is known
        without the history and the turn is surely new (no Idempotency-Key), the upstream request is sent
        at the same time; its text reaches nobody until the turn is stored, and it is dropped if storing fails.
        """
        route = self._require_route(plan.request.model)
        route.admit()  # refused before anything is stored when every upstream of it is full
        request = plan.request
        ids = chat_ids(idempotency_key, plan.owner, request, plan.conversation_key)
        if plan.prompt is None and plan.new_session and request.tool_results:
            raise BadRequest(
                "tool results answer the calls of an earlier answer: name its session_id",
                code=ErrorCode.INVALID_VALUE,
            )
        model = route.model
        turn, account = build_turn(self.settings, plan, ids, model)
        opens = self._opens_early(plan, ids, account, route)
        lease = self._lease()  # granted with the turn: counted from its sending
        if plan.request_key is not None:  # before it is stored: the same request at once is not opened twice
            self._requests[plan.request_key] = True
        session_id = request.session_id or ids.session
        try:
            answer, created, opening = await self._store_turn(session_id, turn, plan.scope, opens)
        except BaseException:
            route.release()  # of the stream opened beside the turn, dropped with it
            raise
        prompt = plan.known_prompt
        if created:
            taken = opening is not None and not await opening.fits(answer)  # then it takes over what the log holds
            self._start(answer, route, prompt=prompt, opening=None if taken else opening, lease=lease, taken_over=taken)
            return answer
        # A retry: attach to the answer, or take it over if its generator is gone (or never began); the same
        # request resent once its answer failed resumes it, within the budgets.
        if opening is not None:
            await opening.discard()
        route.release()
        retried = account if plan.request_key is not None else None
        return await self.take_over(answer, model=model, prompt=prompt, take_unstarted=True, resume_failed=retried)

    def _opens_early(self, plan: ChatPlan, ids: ChatIds, account: TurnAccount, route: Route) -> Opens | None:
        """The upstream request to send while the turn is stored, if it is sent then (None: once it is)."""
        prompt = plan.known_prompt
        # Sent before the turn is stored only where nothing but a failure refuses it: not past a budget, nor
        # into a session a user named (another user's is refused), which would bill an answer nobody gets.
        if prompt is None or ids.derived or account.has_budget:
            return None
        if plan.scope is not None and plan.request.session_id is not None:
            return None
        # Nor for a request this gateway saw lately: it is likely a retry, which generates nothing new. (One that
        # went to another gateway first opens a stream here that is dropped once its turn is found stored.)
        if plan.request_key is not None and plan.request_key in self._requests:
            return None
        options = plan.request.options.given() if plan.request.options is not None else {}
        return functools.partial(route.open_new, prompt, options)

    async def _store_turn(
        self,
        session_id: uuid.UUID,
        turn: TurnCreate,
        scope: str | None,
        opens: Opens | None,
    ) -> tuple[MessageDetail, bool, Opening | None]:
        """Store the turn: its answer as stored, whether this request created it, and the upstream stream
        ``opens`` began beside it (None without one), which nobody is shown before the turn is stored."""
        answer_id = turn.answer.id
        assert answer_id is not None  # chat_ids gives every turn its ids
        storing = asyncio.ensure_future(self.persistence.messages.start_turn(session_id, turn, scope))
        opening: Opening | None = None
        # Until it is started here: a concurrent retry (same Idempotency-Key) that finds the turn stored and
        # claimed by this gateway must follow it, not take it too.
        self._starting[answer_id] = self._starting.get(answer_id, 0) + 1
        try:
            if opens is not None:
                # One step for the turn first: its request is then on the wire before the SDK spends its
                # ~0.7 ms of CPU building the upstream one. The turn is the longer wait before the first word
                # (docs/benchmarks.md, section 3).
                await asyncio.sleep(0)
                opening = Opening(opens, self.log, answer_id, self.settings.instance_id)
            answer, created = await self._stored(storing, session_id, turn, scope, opening)
        except BaseException as exc:
            storing.cancel()
            if opening is not None:
                await opening.discard()
            if isinstance(exc, Conflict):
                raise turn_refused(exc) from exc
            raise
        finally:
            if (left := self._starting.pop(answer_id) - 1) > 0:
                self._starting[answer_id] = left
        return answer, created, opening

    async def _stored(
        self,
        storing: "asyncio.Future[tuple[MessageDetail, bool]]",
        session_id: uuid.UUID,
        turn: TurnCreate,
        scope: str | None,
        opening: Opening | None,
    ) -> tuple[MessageDetail, bool]:
        """The turn as ``storing`` stored it, or as storing it again finds it when its reply was lost."""
        try:
            return await storing
        except ServiceUnavailable:
            # The turn may have been stored, its answer claimed by this gateway, and only the reply lost.
            # The client hears nothing before its fate is known. Its first text logged ahead is forgotten first:
            # crash recovery would read it as shown, and generate an answer this gateway may yet say failed.
            if opening is not None:
                await opening.withdraw()
            answer, created = await self._settle_turn(session_id, turn, scope)
            # Stored by the attempt whose reply was lost: this gateway's own, still to begin.
            return answer, created or (
                answer.status == MessageStatus.IN_PROGRESS
                and answer.lease_owner == self.settings.instance_id
                and not answer.content
                and answer.id not in self._live
            )

    async def _settle_turn(
        self, session_id: uuid.UUID, turn: TurnCreate, scope: str | None
    ) -> tuple[MessageDetail, bool]:
        """Store the turn again, with the same ids, until persistence answers or TURN_SETTLE_SECONDS pass.

        A replay of a turn that did land returns it as stored (then generated here, or followed). Given up,
        the client is told the chat failed, and it never is generated: crash recovery fails, rather than
        generates, an answer its gateway never wrote to once that gateway may have given up
        (``_may_have_been_refused``).
        """
        try:
            return await retry.turn_settle(self.settings)(self.persistence.messages.start_turn, session_id, turn, scope)
        except ServiceUnavailable as exc:
            logger.warning("chat refused: its turn could not be stored in %.0f s", self.settings.turn_settle_seconds)
            raise ServiceUnavailable(
                "the chat could not be started (the persistence service is unreachable); it will not be answered: "
                "retry it",
                code=ErrorCode.PERSISTENCE_UNAVAILABLE,
            ) from exc

    def busy_here(self, answer: MessageDetail) -> bool:
        return answer.id in self._live or answer.id in self._claiming or answer.id in self._starting

    def _orphaned(self, answer: MessageDetail) -> bool:
        """Waiting for a generator: pending, or in progress with no live lease (or one this gateway holds, but
        does not generate: it restarted under the same INSTANCE_ID, or the reply to its turn was lost)."""
        if answer.status == MessageStatus.PENDING:
            return True
        return answer.status == MessageStatus.IN_PROGRESS and (
            not lease_is_live(answer) or answer.lease_owner == self.settings.instance_id
        )

    async def take_over(
        self,
        answer: MessageDetail,
        *,
        prompt: list[ChatCompletionMessageParam] | None = None,
        model: str | None = None,
        take_unstarted: bool = False,
        resume_failed: TurnAccount | None = None,
    ) -> MessageDetail:
        """Generate an orphaned answer here, if no one else does; otherwise leave it (its clients follow it).
        Returns the answer as it now stands.

        ``take_unstarted`` also takes one failed before it began (``NOT_STARTED``): a retry of its chat; with
        ``resume_failed``, the account of a request sent again, any failed one, from its saved text.
        """
        failed = answer.status == MessageStatus.FAILED and answer.error != CANCELLED  # cancelled: ended on purpose
        unstarted = take_unstarted and failed and answer.error == NOT_STARTED
        if answer.role != MessageRole.ASSISTANT or self.busy_here(answer):
            return answer
        if self._orphaned(answer) or unstarted or (failed and resume_failed is not None):
            # Another gateway won the claim, or it changed since it was read (a scan saw it orphaned, then it was
            # cancelled: not generated again). Its clients follow it through persistence.
            with contextlib.suppress(Conflict, PreconditionFailed):
                account = resume_failed if failed and not unstarted else None
                seen = answer.version
                return await self._claim_and_start(answer, model=model, prompt=prompt, account=account, if_match=seen)
        return answer

    async def _resume_here(self, answer: MessageDetail, account: TurnAccount) -> None:
        """Generate a pending, failed or orphaned answer here, or say why not (409); within the budgets (429)."""
        if answer.role != MessageRole.ASSISTANT:
            raise Conflict("only assistant messages can be generated", role=answer.role)
        if self.busy_here(answer):
            raise Conflict("the answer is being generated", code=ErrorCode.IN_PROGRESS, status=answer.status)
        if not (self._orphaned(answer) or answer.status == MessageStatus.FAILED):
            raise Conflict(f"the answer cannot be resumed: it is {answer.status}", status=answer.status)
        await self._claim_and_start(answer, account=account)

    async def _claim_and_start(
        self,
        answer: MessageDetail,
        *,
        model: str | None = None,
        prompt: list[ChatCompletionMessageParam] | None = None,
        account: TurnAccount | None = None,
        if_match: int | None = None,
    ) -> MessageDetail:
        """Claim the answer (Conflict when another gateway holds it; with ``if_match``, PreconditionFailed once it is
        no longer at that version) and generate it here; returns it claimed."""
        route = self._require_route(model or self.upstreams.resumed_on(answer), stored=True)
        self._claiming.add(answer.id)
        try:
            if account is not None and account.has_budget:
                # A new run of a user's answer fits in their budgets, as a new answer must (429 otherwise).
                try:
                    await self.persistence.usage.reserve(answer.id, account)
                except Conflict as exc:
                    if exc.code == ErrorCode.BUDGET_EXCEEDED:
                        raise over_budget(exc) from exc
                    raise
            lease = self._lease()
            claimed = await self.persistence.messages.claim(answer.id, lease.owner, lease.seconds, if_match=if_match)
        finally:
            self._claiming.discard(answer.id)
        self._start(claimed, route, prompt=prompt, lease=lease, taken_over=True)
        return claimed

    def _lease(self) -> Lease:
        """A lease about to be asked for: counted from now, before the request that grants it is sent."""
        return Lease(self.settings.instance_id, self.settings.lease_seconds)

    def _start(
        self,
        claimed: MessageDetail,
        route: Route,
        *,
        prompt: list[ChatCompletionMessageParam] | None,
        opening: Opening | None = None,
        lease: Lease | None = None,
        taken_over: bool = False,
    ) -> None:
        """Generate an answer this instance holds ``lease`` on; ``taken_over``: claimed, rather than stored with
        its turn."""
        generation = Generation(
            claimed,
            route=route,
            settings=self.settings,
            persistence=self.persistence.messages,
            on_finish=self._forget,
            prompt=prompt,
            opening=opening,
            lease=lease,
            log=self.log,
            taken_over=taken_over,
        )
        self._live[claimed.id] = generation
        generation.start()

    def _forget(self, generation: Generation) -> None:
        self._live.pop(generation.message_id, None)

    async def resume(self, message_id: uuid.UUID, caller: Caller = ANYONE) -> MessageDetail:
        return await self._resume(await self.persistence.messages.get(message_id, caller.scope()), caller)

    async def resume_session(self, session_id: uuid.UUID, caller: Caller = ANYONE) -> MessageDetail:
        answer = await self.persistence.messages.last(session_id, MessageRole.ASSISTANT.value, caller.scope())
        return await self._resume(answer, caller)

    async def _resume(self, answer: MessageDetail, caller: Caller) -> MessageDetail:
        account = resume_account(self.settings, caller, answer)
        await self._resume_here(answer, account)
        RESUMES.inc()
        return answer

    async def cancel(self, message_id: uuid.UUID, scope: str | None = None) -> MessageDetail:
        """Stop an answer for good (unlike a disconnect): partial text saved, status failed, error 'cancelled'."""
        if scope is not None:
            await self.persistence.messages.get(message_id, scope)  # another user's answer is a 404
        if (generation := self._live.get(message_id)) is not None:
            generation.stop("cancelled")
            await generation.done.wait()
            return await self.persistence.messages.get(message_id)
        answer = await self.persistence.messages.get(message_id)
        if answer.status == MessageStatus.COMPLETE:
            raise Conflict("the answer is already complete", status=answer.status)
        if answer.status == MessageStatus.FAILED:
            return answer
        # Generated elsewhere: its next write finds the lease gone and stops.
        return await self.persistence.messages.update(message_id, failed_update(CANCELLED))

    async def reattach(self, message_id: uuid.UUID, offset: int, scope: str | None = None) -> MessageDetail:
        """The answer to follow from ``offset``: refused when it has ended before that offset."""
        answer = await self.persistence.messages.get(message_id, scope)
        length = len(answer.content) + len(answer.tool_calls or ())
        if answer.status in TERMINAL and offset > length:
            raise OffsetMismatch(f"offset {offset} is past the end of the answer ({length})", length=length)
        return answer

    def generating(self, message_id: uuid.UUID) -> Generation | None:
        """The answer's generation, while this gateway runs it."""
        return self._live.get(message_id)

    def follow(self, message_id: uuid.UUID, offset: int) -> AsyncIterator[StreamEvent]:
        """The answer's text from ``offset`` on, live, until it ends: here or in another gateway."""
        return self._follower.follow(message_id, offset)

    async def outcome(self, message_id: uuid.UUID) -> MessageDetail:
        """Wait for the answer to end and return it as stored (see ``Follower.outcome``)."""
        return await self._follower.outcome(message_id)

    async def shutdown(self, grace_seconds: float) -> None:
        """Take no new work; let running answers finish within the grace period; release the rest.

        A released answer has its text saved and its lease expired, so any gateway resumes it at once.
        """
        self.draining = True
        running = [asyncio.ensure_future(g.done.wait()) for g in self._live.values()]
        if running and grace_seconds > 0:
            await asyncio.wait(running, timeout=grace_seconds)
        leftovers = list(self._live.values())
        for generation in leftovers:
            generation.stop("shutdown")
        await asyncio.gather(*running, *(g.done.wait() for g in leftovers))
