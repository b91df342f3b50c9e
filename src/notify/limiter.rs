//! A sliding-window limit of posts per receiver: at most `max` in any `window`.
//!
//! A post is recorded when its answer (or its failure) arrived, which is after the receiver saw
//! it; the next post waits until the oldest counted one is a full window (and a millisecond) old.
//! So the receiver, whatever the network's delays, never sees more than `max` within a window.

use std::collections::VecDeque;
use std::time::Duration;

pub struct Limiter {
    max: usize,
    window_ms: i64,
    /// Epoch milliseconds of the recent posts, oldest first.
    posts: VecDeque<i64>,
}

impl Limiter {
    /// `max` 0 = no limit.
    pub fn new(max: u32, window: Duration, recent: Vec<i64>) -> Limiter {
        let mut l = Limiter {
            max: max as usize,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            posts: recent.into(),
        };
        l.trim_to_max();
        l
    }

    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// How long to wait before the next post, at `now_ms`; `None` = now.
    pub fn wait(&mut self, now_ms: i64) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        while self.posts.front().is_some_and(|&t| t + self.window_ms < now_ms) {
            self.posts.pop_front();
        }
        if self.posts.len() < self.max {
            return None;
        }
        let oldest = self.posts.front().copied().unwrap_or(now_ms);
        let free_at = oldest + self.window_ms + 1;
        (free_at > now_ms).then(|| Duration::from_millis((free_at - now_ms) as u64))
    }

    pub fn record(&mut self, at_ms: i64) {
        if self.max > 0 {
            self.posts.push_back(at_ms);
            self.trim_to_max();
        }
    }

    fn trim_to_max(&mut self) {
        while self.posts.len() > self.max {
            self.posts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_posts_in_any_window() {
        let mut l = Limiter::new(2, Duration::from_millis(1000), vec![]);
        assert_eq!(l.wait(0), None);
        l.record(10);
        assert_eq!(l.wait(20), None);
        l.record(30);
        assert_eq!(l.wait(40), Some(Duration::from_millis(971)));
        assert_eq!(l.wait(1011), None, "the first post left the window");
        l.record(1011);
        assert_eq!(l.wait(1012), Some(Duration::from_millis(19)));
        let mut unlimited = Limiter::new(0, Duration::from_millis(1000), vec![]);
        unlimited.record(1);
        assert_eq!(unlimited.wait(1), None);
        let mut seeded = Limiter::new(1, Duration::from_millis(100), vec![1, 50]);
        assert_eq!(seeded.wait(60), Some(Duration::from_millis(91)));
    }
}
