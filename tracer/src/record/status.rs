//! The one-line live status on stderr while recording on a terminal.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

pub struct StatusLine {
    enabled: bool,
    color: bool,
    started: Instant,
    last: Option<(Instant, u64)>,
}

impl StatusLine {
    pub fn new(quiet: bool, color: bool) -> Self {
        StatusLine {
            enabled: !quiet && std::io::stderr().is_terminal(),
            color,
            started: Instant::now(),
            last: None,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Redraws the line: elapsed time, events, events/s since the last
    /// update, lost events.
    pub fn update(&mut self, events: u64, lost: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let rate = match self.last {
            Some((then, before)) if now > then => (events - before) as f64 / (now - then).as_secs_f64(),
            _ => 0.0,
        };
        self.last = Some((now, events));
        let lost = match lost {
            0 => "0 lost".to_string(),
            _ if self.color => format!("\x1b[31m{lost} lost\x1b[0m"),
            _ => format!("{lost} lost"),
        };
        eprint!(
            "\r\x1b[Knixtrace: recording {:>6.1} s  {events} events  {rate:.0}/s  {lost}",
            self.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }

    pub fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}
