//! `rampart top`: a live view, refreshed every second, of the busiest rules (packets
//! per second, with a sparkline of the last minute) and the limits refusing most. Not
//! on a terminal (or with `--once`), one plain-text snapshot of the totals. `q` quits.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};

use crate::observe::rule_command;

use super::{CliError, Ctx, Out};

/// Samples kept per row for its sparkline.
const HISTORY: usize = 60;

/// One reading of the kernel: per rule its packets, per limit its refused count.
struct Sample {
    at: Instant,
    /// (rule number, command, packets).
    rules: Vec<(usize, String, u64)>,
    /// (rule numbers, command, refused).
    limits: Vec<(String, String, u64)>,
}

fn spark(history: &VecDeque<u64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = history.iter().copied().max().unwrap_or(0).max(1);
    history
        .iter()
        .map(|&v| {
            if v == 0 {
                ' '
            } else {
                BARS[((v * 7).div_ceil(max)) as usize % 8]
            }
        })
        .collect()
}

impl Ctx<'_> {
    /// Read the policy and the kernel's counters once (the lock is held only for it).
    fn sample(&self) -> Result<Option<Sample>, CliError> {
        let fw = self.open_read()?;
        if !fw.kernel().is_loaded() {
            return Ok(None);
        }
        let policy = fw.policy();
        let plan = crate::compile::compile(policy);
        // One listing for both the rules' counters and the limits' state.
        let listing = self.backend.list_json()?;
        let counters = crate::backend::Counters::from_listing(&listing);
        let counts = super::report::rule_counts(policy, &plan, &counters);
        let rules = policy
            .rules
            .iter()
            .zip(counts)
            .enumerate()
            .map(|(i, (r, c))| (i + 1, rule_command(r), c.map_or(0, |c| c.packets)))
            .collect();
        let state = super::limits::read_listing(&listing);
        let limits = super::limits::limits(policy)
            .into_iter()
            .map(|(numbers, rule, st)| {
                let nums: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
                let refused = state.refused.get(&st.chain).copied().unwrap_or(0);
                (nums.join(","), rule_command(rule), refused)
            })
            .collect();
        Ok(Some(Sample {
            at: Instant::now(),
            rules,
            limits,
        }))
    }

    /// `top [--once]`.
    pub(super) fn top(&self, once: bool) -> Result<Out, CliError> {
        let Some(first) = self.sample()? else {
            return Ok(vec!["Status: inactive".into()]);
        };
        if once || !std::io::stdout().is_terminal() {
            return Ok(snapshot(&first));
        }
        let mut terminal = ratatui::init();
        let result = self.live(&mut terminal, first);
        ratatui::restore();
        result.map(|()| Vec::new())
    }

    fn live(&self, terminal: &mut ratatui::DefaultTerminal, first: Sample) -> Result<(), CliError> {
        let mut prev = first;
        let mut rule_hist: History = HashMap::new();
        let mut limit_hist: History = HashMap::new();
        let mut next_at = Instant::now() + Duration::from_secs(1);
        loop {
            let wait = next_at.saturating_duration_since(Instant::now());
            if event::poll(wait).map_err(|e| super::usage(format!("terminal: {e}")))? {
                if let Ok(Event::Key(k)) = event::read() {
                    if k.kind == KeyEventKind::Press
                        && matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                    {
                        return Ok(());
                    }
                }
                continue;
            }
            next_at += Duration::from_secs(1);
            let Some(now) = self.sample()? else {
                return Ok(());
            };
            let secs = now.at.duration_since(prev.at).as_secs_f64().max(0.001);
            // A rule is followed by its number and command, a limit by its command (its
            // numbers change when rules are inserted before it).
            let before: HashMap<(usize, &str), u64> = prev
                .rules
                .iter()
                .map(|(n, c, p)| ((*n, c.as_str()), *p))
                .collect();
            let rows = busiest(
                now.rules
                    .iter()
                    .map(|(n, cmd, p)| ((*n, cmd.as_str()), n.to_string(), cmd, *p)),
                &before,
                &mut rule_hist,
                secs,
            );
            let lbefore: HashMap<&str, u64> = prev
                .limits
                .iter()
                .map(|(_, c, r)| (c.as_str(), *r))
                .collect();
            let lrows = busiest(
                now.limits
                    .iter()
                    .map(|(nums, cmd, r)| (cmd.as_str(), nums.clone(), cmd, *r)),
                &lbefore,
                &mut limit_hist,
                secs,
            );
            let draw = terminal.draw(|f| {
                let [head, rules_area, limits_area] = Layout::vertical([
                    Constraint::Length(1),
                    Constraint::Min(4),
                    Constraint::Length((lrows.len() as u16 + 3).min(12)),
                ])
                .areas(f.area());
                f.render_widget(
                    Line::from(format!(
                        "rampart top: {} rules, {} limits; every second; q quits",
                        now.rules.len(),
                        now.limits.len()
                    ))
                    .style(Style::default().add_modifier(Modifier::BOLD)),
                    head,
                );
                let rules = busiest_table(
                    &rows,
                    &rule_hist,
                    (2, 5, 9),
                    ["rule", "pkts/s", "packets"],
                    "Busiest rules",
                );
                f.render_widget(rules, rules_area);
                let limits = busiest_table(
                    &lrows,
                    &limit_hist,
                    (0, 9, 11),
                    ["limit", "refused/s", "refused"],
                    "Limits refusing most",
                );
                f.render_widget(limits, limits_area);
            });
            draw.map_err(|e| super::usage(format!("terminal: {e}")))?;
            prev = now;
        }
    }
}

/// Each row's deltas of the last minute, by its id (a rule's number, a limit's numbers).
type History = HashMap<String, VecDeque<u64>>;

/// One row of the live view: id, command, per second since the last sample, total.
type Busy = (String, String, f64, u64);

/// The rows of one table of the live view, busiest first: each item (its key in
/// `before`, its id, its command, its total now) with its rate since `before`, its
/// history extended by that delta.
fn busiest<'a, K: Eq + std::hash::Hash>(
    now: impl Iterator<Item = (K, String, &'a String, u64)>,
    before: &HashMap<K, u64>,
    hist: &mut History,
    secs: f64,
) -> Vec<Busy> {
    let mut rows: Vec<Busy> = Vec::new();
    for (key, id, cmd, total) in now {
        let d = total.saturating_sub(*before.get(&key).unwrap_or(&total));
        let q = hist.entry(id.clone()).or_default();
        q.push_back(d);
        if q.len() > HISTORY {
            q.pop_front();
        }
        rows.push((id, cmd.clone(), d as f64 / secs, total));
    }
    rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.3.cmp(&a.3)));
    rows
}

/// A table of the live view: `[id]` (padded to `pad`), command, rate, total and the
/// last minute's sparkline; the id column `id_width` wide, the rate column
/// `rate_width`, under `header` (what, rate, total) and `title`.
fn busiest_table<'a>(
    rows: &[Busy],
    hist: &History,
    (pad, id_width, rate_width): (usize, u16, u16),
    header: [&'a str; 3],
    title: &'a str,
) -> Table<'a> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    Table::new(
        rows.iter().map(|(id, cmd, rate, total)| {
            Row::new(vec![
                format!("[{id:>pad$}]"),
                cmd.clone(),
                format!("{rate:.1}"),
                total.to_string(),
                spark(&hist[id.as_str()]),
            ])
        }),
        [
            Constraint::Length(id_width),
            Constraint::Min(30),
            Constraint::Length(rate_width),
            Constraint::Length(10),
            Constraint::Length(HISTORY as u16),
        ],
    )
    .header(Row::new(vec!["", header[0], header[1], header[2], "last minute"]).style(bold))
    .block(Block::bordered().title(title))
}

/// The plain-text view: rules by packets, then limits by refused connections.
fn snapshot(s: &Sample) -> Out {
    let mut out = vec![format!("{:>12}  rule", "packets")];
    let mut rules: Vec<&(usize, String, u64)> = s.rules.iter().collect();
    rules.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    for (n, cmd, p) in rules {
        out.push(format!("{p:>12}  [{n:>2}] {cmd}"));
    }
    if !s.limits.is_empty() {
        out.push(format!("{:>12}  limit", "refused"));
        let mut limits: Vec<&(String, String, u64)> = s.limits.iter().collect();
        limits.sort_by_key(|l| std::cmp::Reverse(l.2));
        for (nums, cmd, r) in limits {
            out.push(format!("{r:>12}  [{nums}] {cmd}"));
        }
    }
    out
}
