//! The progress bar: done/total, failures, elapsed time and ETA, drawn with
//! indicatif on standard error. On a terminal it redraws in place; forced
//! with `--bar` elsewhere (a Slurm output file, a CI log) it writes one
//! plain line at most every few seconds instead of control codes.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// When to show the bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarMode {
    /// When standard error is a terminal.
    Auto,
    On,
    Off,
}

/// The bar (or nothing).
pub struct Progress {
    bar: Option<ProgressBar>,
    failed: u64,
}

impl Progress {
    pub fn new(mode: BarMode, total: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let show = match mode {
            BarMode::Auto => tty,
            BarMode::On => true,
            BarMode::Off => false,
        };
        if !show {
            return Progress {
                bar: None,
                failed: 0,
            };
        }
        let target = if tty {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::term_like_with_hz(Box::<LogLines>::default(), 1)
        };
        let colour = colored::control::SHOULD_COLORIZE.should_colorize();
        let template = if tty && colour {
            "{elapsed_precise} {wide_bar:.cyan/blue} {pos}/{len} {msg}ETA {eta}"
        } else if tty {
            "{elapsed_precise} {wide_bar} {pos}/{len} {msg}ETA {eta}"
        } else {
            "caiclust: progress {pos}/{len} done, {msg}elapsed {elapsed}, ETA {eta}"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total), target).with_style(style);
        if tty {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        Progress {
            bar: Some(bar),
            failed: 0,
        }
    }

    /// One more job ended.
    pub fn job_done(&mut self, failed: bool) {
        if failed {
            self.failed += 1;
        }
        if let Some(bar) = &self.bar {
            if self.failed > 0 {
                bar.set_message(format!("({} failed) ", self.failed));
            }
            bar.inc(1);
        }
    }

    /// Run `f` (which writes to the terminal) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Draw the final state and leave it on screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }
}

/// A "terminal" that is a log: a draw becomes one line, nothing moves;
/// at most one line every [`LOG_EVERY`], and never the same line twice.
#[derive(Debug, Default)]
struct LogLines {
    last: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How often a forced bar writes a line when standard error is not a
/// terminal.
const LOG_EVERY: Duration = Duration::from_secs(2);

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        if s.trim().is_empty() {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((when, text)) = &*last {
            if text == s || when.elapsed() < LOG_EVERY {
                return Ok(());
            }
        }
        *last = Some((std::time::Instant::now(), s.to_string()));
        writeln!(std::io::stderr().lock(), "{s}")
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
