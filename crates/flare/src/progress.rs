//! What the CLI shows while it waits: bars and spinners on stderr. They
//! are drawn only when stderr is a terminal (indicatif hides them
//! otherwise), so scripts, pipes and CI logs see the plain lines alone.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Every bar, drawn together (an upload's bar under an apply's).
fn shown(bar: ProgressBar) -> ProgressBar {
    static ALL: OnceLock<MultiProgress> = OnceLock::new();
    ALL.get_or_init(MultiProgress::new).add(bar)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A spinner saying what runs, until it is finished.
pub fn spinner(message: impl Into<String>) -> ProgressBar {
    let bar = shown(
        ProgressBar::new_spinner()
            .with_style(style("{spinner} {msg} ({elapsed})"))
            .with_message(message.into()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A bar over `steps` steps (an apply's plan).
pub fn steps(steps: usize) -> ProgressBar {
    shown(ProgressBar::new(steps as u64).with_style(style("{bar:30} {pos}/{len} {msg}")))
}

/// A hook that draws a bar for each file the client uploads.
pub fn uploads() -> flare_api::UploadWatcher {
    let current: Arc<Mutex<Option<ProgressBar>>> = Arc::default();
    flare_api::UploadWatcher(Arc::new(move |event| {
        let Ok(mut current) = current.lock() else {
            return;
        };
        match event {
            flare_api::Upload::Started { file, size } => {
                let bar = shown(ProgressBar::new(size).with_style(style(
                    "uploading {msg} {bar:30} {bytes}/{total_bytes} ({bytes_per_sec})",
                )));
                bar.set_message(file.to_string());
                *current = Some(bar);
            }
            flare_api::Upload::Sent { bytes } => {
                if let Some(bar) = current.as_ref() {
                    bar.inc(bytes);
                }
            }
            flare_api::Upload::Finished => {
                if let Some(bar) = current.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }))
}
