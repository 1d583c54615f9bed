//! `ctl get nodes` output written page by page: the client fetches
//! `GET /api/v1/nodes` in pages (`limit`/`continue`) and hands each page to
//! a [`NodeWriter`], which writes it to standard output at once, so the
//! client holds one page, never the whole cluster.
//!
//! - [`NodeWriter::new`]: a writer for one output format.
//! - [`NodeWriter::page`]: one page's nodes, written and flushed.
//! - [`NodeWriter::finish`]: closes the document.
//!
//! The bytes are those of the whole list printed at once: JSON as
//! `serde_json`'s pretty printer writes `{"nodes": [...]}`, YAML as
//! `yaml-rust2` writes it. A table's columns are as wide as their widest
//! cell so far: a later page may widen a column, never narrow one
//! ([`Columns`], also used by `ctl power status`).

use std::io::Write;

use serde_json::{Value as Json, json};

use crate::cli::ctl::{Output, header, row, table_line};
use crate::cli::yaml;

/// Where a list is in its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing written yet.
    Empty,
    /// The opening and at least one node written.
    Open,
}

/// Writes a node list in one format as its pages arrive.
#[derive(Debug)]
pub struct NodeWriter<W: Write> {
    out: W,
    output: Output,
    stage: Stage,
    /// The table's columns (`table` and `wide`).
    columns: Columns,
}

/// A table written in batches of rows: the header before the first batch
/// (or alone, for no rows), each column as wide as its widest cell so
/// far, the last column unpadded.
#[derive(Debug)]
pub struct Columns {
    header: Vec<String>,
    /// Column widths so far (characters).
    widths: Vec<usize>,
    color: bool,
    started: bool,
}

impl Columns {
    /// A table with these column names; `color` paints the cells.
    pub fn new(header: Vec<String>, color: bool) -> Columns {
        let widths = header.iter().map(|h| h.chars().count()).collect();
        Columns {
            header,
            widths,
            color,
            started: false,
        }
    }

    /// Writes a batch of rows (the header first, once).
    pub fn write(&mut self, out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
        for r in rows {
            for (w, cell) in self.widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        self.header_once(out)?;
        for r in rows {
            writeln!(out, "{}", table_line(r, &self.widths, false, self.color))?;
        }
        Ok(())
    }

    /// Ends the table: the header alone if no row was written.
    pub fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.header_once(out)
    }

    fn header_once(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if !self.started {
            self.started = true;
            writeln!(
                out,
                "{}",
                table_line(&self.header, &self.widths, true, false)
            )?;
        }
        Ok(())
    }
}

/// The pretty JSON of a whole list starts with this ...
const JSON_HEAD: &str = "{\n  \"nodes\": [\n";
/// ... and ends with this.
const JSON_TAIL: &str = "\n  ]\n}";
/// The YAML of a non-empty list starts with this.
const YAML_HEAD: &str = "nodes:\n";

impl<W: Write> NodeWriter<W> {
    /// A writer of `output` to `out`; `color` paints table cells.
    pub fn new(out: W, output: Output, color: bool) -> NodeWriter<W> {
        let wide = output == Output::Wide;
        NodeWriter {
            out,
            output,
            stage: Stage::Empty,
            columns: Columns::new(header(wide), color),
        }
    }

    /// Writes one page's nodes (the API's `nodes` array) and flushes.
    pub fn page(&mut self, nodes: Vec<Json>) -> std::io::Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let first = self.stage == Stage::Empty;
        match self.output {
            Output::Json => self.json_page(nodes, first)?,
            Output::Yaml => self.yaml_page(nodes, first)?,
            Output::Table | Output::Wide => {
                let wide = self.output == Output::Wide;
                let rows: Vec<Vec<String>> = nodes.iter().map(|n| row(n, wide)).collect();
                self.columns.write(&mut self.out, &rows)?;
            }
        }
        self.stage = Stage::Open;
        self.out.flush()
    }

    /// Closes the document (an empty list's whole document when no page
    /// held a node) and flushes.
    pub fn finish(mut self) -> std::io::Result<()> {
        let empty = self.stage == Stage::Empty;
        match (self.output, empty) {
            (Output::Json, true) => writeln!(self.out, "{{\n  \"nodes\": []\n}}")?,
            (Output::Json, false) => writeln!(self.out, "{JSON_TAIL}")?,
            (Output::Yaml, true) => write!(self.out, "{}", yaml::to_yaml(&json!({"nodes": []})))?,
            (Output::Table | Output::Wide, true) => self.columns.finish(&mut self.out)?,
            _ => {}
        }
        self.out.flush()
    }

    /// The page's nodes as the pretty printer writes them inside the whole
    /// list: the page printed as a list, its opening and closing cut.
    fn json_page(&mut self, nodes: Vec<Json>, first: bool) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(&json!({ "nodes": nodes }))
            .map_err(std::io::Error::other)?;
        let body = text
            .strip_prefix(JSON_HEAD)
            .and_then(|t| t.strip_suffix(JSON_TAIL))
            .ok_or_else(|| std::io::Error::other("unexpected pretty JSON layout"))?;
        if first {
            write!(self.out, "{JSON_HEAD}{body}")
        } else {
            write!(self.out, ",\n{body}")
        }
    }

    /// The page's nodes as the emitter writes them inside the whole list:
    /// the page emitted as a list, its `nodes:` line cut.
    fn yaml_page(&mut self, nodes: Vec<Json>, first: bool) -> std::io::Result<()> {
        let text = yaml::to_yaml(&json!({ "nodes": nodes }));
        let body = text
            .strip_prefix(YAML_HEAD)
            .ok_or_else(|| std::io::Error::other("unexpected YAML layout"))?;
        if first {
            write!(self.out, "{YAML_HEAD}")?;
        }
        write!(self.out, "{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Json> {
        (1..=n)
            .map(|i| {
                json!({
                    "name": format!("n{i:04}"),
                    "rack": "r01",
                    "cfg": {"/PhysState": "POWER_ON", "/Empty": ""},
                    "dsc": {"/PhysState": if i % 2 == 0 { "POWER_OFF" } else { "POWER_ON" }},
                    "converged": i % 2 == 1,
                    "frozen": false,
                    "chain": ["power_on", "boot"],
                    "odd": {},
                })
            })
            .collect()
    }

    /// Writes `all` in pages of `page` nodes.
    fn paged(all: &[Json], page: usize, output: Output) -> String {
        let mut buf = Vec::new();
        let mut w = NodeWriter::new(&mut buf, output, false);
        for p in all.chunks(page.max(1)) {
            w.page(p.to_vec()).unwrap();
        }
        w.finish().unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn pages_make_the_same_json_and_yaml_as_one_document() {
        for n in [0, 1, 5, 7] {
            let all = nodes(n);
            let whole = json!({ "nodes": all });
            let json_once = format!("{}\n", serde_json::to_string_pretty(&whole).unwrap());
            let yaml_once = yaml::to_yaml(&whole);
            for page in [1, 2, 3, 100] {
                assert_eq!(paged(&all, page, Output::Json), json_once, "{n}/{page}");
                assert_eq!(paged(&all, page, Output::Yaml), yaml_once, "{n}/{page}");
            }
        }
    }

    #[test]
    fn table_pages_keep_the_columns() {
        let all = nodes(5);
        let once = paged(&all, 100, Output::Wide);
        assert_eq!(paged(&all, 2, Output::Wide), once);
        assert_eq!(once.lines().count(), 6);
        assert!(once.starts_with("NAME "), "{once}");
        let empty = paged(&[], 2, Output::Table);
        assert_eq!(empty.lines().count(), 1, "{empty}");
        // A longer name on a later page widens its column from there on.
        let mut more = nodes(2);
        more[1]["name"] = json!("a-much-longer-node-name");
        let t = paged(&more, 1, Output::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[2].starts_with("a-much-longer-node-name  r01"), "{t}");
        assert!(lines[1].starts_with("n0001  r01"), "{t}");
    }
}
