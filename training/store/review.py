"""The review queue's data: candidates from the prediction log, their scores under the
adapter in service, and leases, so two reviewers are never handed the same text.

One implementation over SQL for both backends: the statements are the same but for
where the samples live (another SQLite file, attached) and how the log is ordered.
`open_review_store` picks the backend of a feedback store.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from training.review import Candidate, estimate_from_top
from training.store.base import FeedbackStore

PRUNE_EVERY_S = 30.0


@dataclass(frozen=True)
class ReviewCounts:
    """What the queue's metrics report."""

    depth: int  # texts the queue could hand out now, among the newest `pool` predictions
    labeled_from_queue: int  # active corrections of texts the queue had handed out
    labeled_elsewhere: int  # every other active correction


class ReviewStore(abc.ABC):
    """Candidates, re-scores and leases, in the database of the feedback store."""

    samples_table = "samples"
    log_order = "seq"  # the prediction log's insertion order

    def __init__(self, *, max_age_s: float):
        self.max_age_s = max_age_s  # the prediction log's retention: scores and leases follow
        self._last_prune = 0.0

    @abc.abstractmethod
    def _rows(self, query: str, params: Sequence) -> list[tuple]:
        """Run one read (`%s` placeholders)."""

    @abc.abstractmethod
    def _write(self, work) -> list:
        """Run `work(execute)` in one write transaction; `execute(query, params)` answers
        the statement's rows."""

    @abc.abstractmethod
    def _json(self, value) -> str | object:
        """`top` as the backend stores JSON."""

    @staticmethod
    def _top(value) -> tuple[tuple[str, float], ...]:
        pairs = json.loads(value) if isinstance(value, str) else value
        return tuple((label, float(score)) for label, score in pairs)

    def _open_rows(self, columns: str) -> str:
        """The newest `pool` remembered predictions whose text no active correction holds
        and no unexpired lease holds (duplicates of a text included)."""
        return (
            f"SELECT {columns} FROM predictions p"
            " LEFT JOIN review_scores s ON s.text_key = p.text_key"
            " WHERE p.created_at >= %s"
            f" AND NOT EXISTS (SELECT 1 FROM {self.samples_table} f"
            "   WHERE f.text_key = p.text_key AND f.superseded_by IS NULL)"
            " AND NOT EXISTS (SELECT 1 FROM review_leases l"
            "   WHERE l.text_key = p.text_key AND l.expires_at > %s)"
            f" ORDER BY p.{self.log_order} DESC LIMIT %s"
        )

    def candidates(
        self, *, pool: int, label_count: int, now: float | None = None
    ) -> list[Candidate]:
        """One candidate per open text among the newest `pool` predictions, newest first,
        with the freshest scores known: a re-score if there is one, else the served top."""
        now = time.time() if now is None else now
        columns = (
            "p.id, p.text, p.text_key, p.created_at, p.adapter, p.top,"
            " s.adapter, s.top, s.margin, s.entropy"
        )
        rows = self._rows(self._open_rows(columns), (now - self.max_age_s, now, pool))
        found: dict[str, Candidate] = {}
        for pid, text, key, served_at, adapter, top, s_adapter, s_top, margin, entropy in rows:
            if key in found:  # an older prediction of the same text
                continue
            if s_adapter is None:
                top = self._top(top)
                margin, entropy = estimate_from_top(top, label_count)
            else:
                adapter, top = s_adapter, self._top(s_top)
            found[key] = Candidate(pid, text, key, served_at, adapter, top, margin, entropy)
        return list(found.values())

    def save_scores(self, candidates: Sequence[Candidate], now: float | None = None) -> None:
        """Remember each text's scores under the adapter that re-scored it."""
        now = time.time() if now is None else now
        rows = [
            (c.text_key, c.adapter, self._json(c.top), c.margin, c.entropy, now) for c in candidates
        ]

        def work(execute):
            for row in rows:
                execute(
                    "INSERT INTO review_scores (text_key, adapter, top, margin, entropy,"
                    " scored_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (text_key) DO"
                    " UPDATE SET adapter = excluded.adapter, top = excluded.top,"
                    " margin = excluded.margin, entropy = excluded.entropy,"
                    " scored_at = excluded.scored_at",
                    row,
                )
            if now - self._last_prune > PRUNE_EVERY_S:
                cutoff = now - self.max_age_s
                execute("DELETE FROM review_scores WHERE scored_at < %s", (cutoff,))
                execute("DELETE FROM review_leases WHERE leased_at < %s", (cutoff,))
                self._last_prune = now
            return []

        self._write(work)

    def lease(
        self, candidates: Sequence[Candidate], limit: int, reviewer: str, lease_s: float,
        now: float | None = None,
    ) -> list[Candidate]:  # fmt: skip
        """Lease the first `limit` candidates' texts that no other unexpired lease holds (a
        reviewer racing this one took them) to `reviewer`; those leased, in order."""
        now = time.time() if now is None else now

        def work(execute):
            leased = []
            for c in candidates:
                if len(leased) == limit:
                    break
                if execute(
                    "INSERT INTO review_leases (text_key, prediction_id, reviewer, leased_at,"
                    " expires_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (text_key) DO UPDATE"
                    " SET prediction_id = excluded.prediction_id, reviewer = excluded.reviewer,"
                    " leased_at = excluded.leased_at, expires_at = excluded.expires_at"
                    " WHERE review_leases.expires_at <= %s RETURNING text_key",
                    (c.text_key, c.prediction_id, reviewer, now, now + lease_s, now),
                ):
                    leased.append(c)
            return leased

        return self._write(work)

    def counts(self, *, pool: int, now: float | None = None) -> ReviewCounts:
        """Queue depth, and corrections of texts the queue handed out vs all others."""
        now = time.time() if now is None else now
        inner = self._open_rows("p.text_key")
        ((depth,),) = self._rows(
            f"SELECT count(DISTINCT text_key) FROM ({inner}) open_texts",
            (now - self.max_age_s, now, pool),
        )
        ((total, queued),) = self._rows(
            f"SELECT count(*), count(l.text_key) FROM {self.samples_table} f"
            " LEFT JOIN review_leases l ON l.text_key = f.text_key"
            " AND f.created_at >= l.leased_at WHERE f.superseded_by IS NULL",
            (),
        )
        return ReviewCounts(depth, queued, total - queued)

    @abc.abstractmethod
    def close(self) -> None:
        """Release what this object opened itself."""


def open_review_store(store: FeedbackStore, *, max_age_s: float) -> ReviewStore:
    """The review store in the database of `store`, either backend."""
    from training.store.sqlite import SQLiteFeedbackStore

    if isinstance(store, SQLiteFeedbackStore):
        from training.store.review_sqlite import SQLiteReviewStore

        return SQLiteReviewStore(store.data_dir, max_age_s=max_age_s)
    from training.store.review_postgres import PostgresReviewStore

    return PostgresReviewStore(store.db, max_age_s=max_age_s)
