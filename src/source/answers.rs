//! A socket connection's answers: each sync line, and the close, answered in order as soon as
//! everything the client sent before it is durable, while the connection reads on.
//!
//! Answering in the reading task meant reading nothing more until the batch behind a sync line was
//! written (up to `pipeline.max_wait`): a client that pipelines chunks, each closed by a sync line,
//! then got one chunk per wait (issue 20: the Python client sent 1.6 MB/s to the daemon, 20 MB/s to
//! a stand-in that read on). So the reader hands each answer to [`Answers`] and goes on; a task of
//! the connection's own, [`Answerer`], waits for each one's durability in turn and writes it.
//!
//! What may wait is bounded: the reader reads only while fewer than [`MAX_OWED`] answers wait (one
//! read can add at most a read's worth of sync lines past that), and each waiting answer holds its
//! bytes in the memory budget. A client that does not read its answers for `idle_timeout` is given
//! up, so its answers cannot hold memory for ever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};

use super::client::Mark;
use crate::pipeline::memory::Reservation;

/// Answers a connection may owe before it stops reading until one is written. The Python client
/// keeps up to 32 chunks in flight (a window of 8 MiB in chunks of 256 KiB), each owed an answer.
pub const MAX_OWED: usize = 256;

/// MemoryBudget bytes an owed answer holds besides its line: the queue entry and the mark.
const ANSWER_OVERHEAD: usize = 128;

/// One answer line, owed once everything before its mark is durable.
struct Owed {
    mark: Mark,
    line: String,
    /// The line's share of the memory budget, given back once written.
    _memory: Reservation,
}

/// The reader's side: answers handed over in the order their lines were read.
pub struct Answers {
    tx: mpsc::UnboundedSender<Owed>,
    count: Arc<Count>,
}

/// Answers owed and not yet written, and a wake-up when one is.
#[derive(Default)]
struct Count {
    owed: AtomicUsize,
    written: Notify,
}

/// The writing side: a task of its own per connection.
pub struct Answerer {
    rx: mpsc::UnboundedReceiver<Owed>,
    write: OwnedWriteHalf,
    count: Arc<Count>,
    /// A write not done within this long gives the client up (it does not read its answers);
    /// zero: never.
    patience: Duration,
}

/// A pair: [`Answers`] for the reader, [`Answerer`] to run.
pub fn answers(write: OwnedWriteHalf, patience: Duration) -> (Answers, Answerer) {
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(Count::default());
    (
        Answers {
            tx,
            count: count.clone(),
        },
        Answerer {
            rx,
            write,
            count,
            patience,
        },
    )
}

/// The answerer is gone: the client stopped taking its answers (or went away).
#[derive(Debug)]
pub struct Gone;

impl Answers {
    /// Owes `line` (ending in a newline) once everything before `mark` is durable. The line's
    /// share of the memory budget is taken from `from` (the read it came in), or beyond it, and
    /// held until the line is written.
    pub fn owe(&self, mark: Mark, line: String, from: &mut Reservation) -> Result<(), Gone> {
        let share = line.len() + ANSWER_OVERHEAD;
        let mut memory = Reservation::none();
        memory.take_from(from, share);
        memory.resize(share);
        self.count.owed.fetch_add(1, Ordering::AcqRel);
        self.tx
            .send(Owed {
                mark,
                line,
                _memory: memory,
            })
            .map_err(|_| Gone)
    }

    /// Whether the connection may read more: fewer than [`MAX_OWED`] answers wait.
    pub fn has_room(&self) -> bool {
        self.count.owed.load(Ordering::Acquire) < MAX_OWED
    }

    /// Returns once [`Answers::has_room`], or the answerer is gone.
    pub async fn room(&self) {
        loop {
            let written = self.count.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            if self.has_room() || self.tx.is_closed() {
                return;
            }
            written.await;
        }
    }

    /// Whether the answerer is gone (the client stopped taking its answers).
    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }
}

impl Answerer {
    /// Writes each answer once it is due, in order; answers already due are written together.
    /// Returns the socket's writing half once every answer is written, or `None` if the client
    /// stopped taking them (a write failed, or did not finish within `patience`).
    pub async fn run(mut self) -> Option<OwnedWriteHalf> {
        let mut out = Vec::new();
        let mut next = self.rx.recv().await;
        while let Some(owed) = next.take() {
            owed.mark.durable().await;
            out.extend_from_slice(owed.line.as_bytes());
            let mut written = vec![owed];
            // Whatever is due already goes in the same write.
            loop {
                match self.rx.try_recv() {
                    Ok(more) if more.mark.is_durable() => {
                        out.extend_from_slice(more.line.as_bytes());
                        written.push(more);
                    }
                    Ok(more) => {
                        next = Some(more);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !self.write_out(&out).await {
                // Closed before the reader is woken, so that it sees it; the owed answers' memory
                // goes back as they are dropped.
                self.rx.close();
                self.count.written.notify_waiters();
                return None;
            }
            out.clear();
            self.count.owed.fetch_sub(written.len(), Ordering::AcqRel);
            drop(written);
            self.count.written.notify_waiters();
            if next.is_none() {
                next = self.rx.recv().await;
            }
        }
        Some(self.write)
    }

    async fn write_out(&mut self, bytes: &[u8]) -> bool {
        let write = self.write.write_all(bytes);
        if self.patience.is_zero() {
            return write.await.is_ok();
        }
        matches!(tokio::time::timeout(self.patience, write).await, Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ack::Delivery;
    use crate::pipeline::memory::MemoryBudget;
    use tokio::io::AsyncBufReadExt;

    /// Reads the next answer line the client got.
    async fn next_line(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::net::UnixStream>>) -> String {
        tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("an answer")
            .unwrap()
            .expect("not closed")
    }

    #[tokio::test]
    async fn answers_go_out_in_order_each_once_what_came_before_it_is_durable_and_are_bounded() {
        let budget = MemoryBudget::new(1 << 20);
        let (daemon, client) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = daemon.into_split();
        let (answers, answerer) = answers(write, Duration::ZERO);
        let answering = tokio::spawn(answerer.run());
        let mut lines = tokio::io::BufReader::new(client).lines();

        let delivery = Arc::new(Delivery::default());
        let (first, second) = (delivery.ack(1), delivery.ack(1));
        let owe = |chunks, line: &str| {
            let mut from = budget.empty();
            answers
                .owe(Mark::new(delivery.clone(), chunks), format!("{line}\n"), &mut from)
                .unwrap();
        };
        owe(1, "after the first chunk");
        owe(2, "after the second chunk");
        for _ in 2..MAX_OWED {
            assert!(answers.has_room());
            owe(2, "again");
        }
        assert!(!answers.has_room(), "no more reading while MAX_OWED answers wait");
        assert!(
            budget.used() >= MAX_OWED * ANSWER_OVERHEAD,
            "waiting answers hold memory"
        );

        // The second chunk is durable first: its answer waits for the first's.
        second.acknowledge();
        first.acknowledge();
        assert_eq!(next_line(&mut lines).await, "after the first chunk");
        assert_eq!(next_line(&mut lines).await, "after the second chunk");
        for _ in 2..MAX_OWED {
            assert_eq!(next_line(&mut lines).await, "again");
        }
        answers.room().await;
        assert!(answers.has_room());
        drop(answers);
        assert!(
            answering.await.unwrap().is_some(),
            "the socket comes back once all are written"
        );
        assert_eq!(budget.used(), 0, "written answers give their memory back");
    }
}
