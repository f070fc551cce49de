//! Plain-text tables whose columns are as wide as their widest cell.

use crate::style::{self, paint_if, Style};

/// The style of a cell, from its text.
pub(crate) type CellStyle = fn(&str) -> Option<Style>;

/// How a column's cells are aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table: a header row and rows of cells, rendered with two spaces between columns.
#[derive(Debug)]
pub(crate) struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
    /// Per column: the style of a cell, from its text (colour on a terminal only).
    styles: Vec<Option<CellStyle>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns.iter().map(|(h, a)| ((*h).to_owned(), *a)).collect(),
            rows: Vec::new(),
            styles: vec![None; columns.len()],
        }
    }

    /// Colour the cells of column `index` by `style` (on a terminal).
    pub(crate) fn style_column(mut self, index: usize, style: CellStyle) -> Self {
        if let Some(slot) = self.styles.get_mut(index) {
            *slot = Some(style);
        }
        self
    }

    /// Add a row (missing cells are empty, extra ones dropped).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The lines of the table, header first, without trailing spaces.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines_in(false)
    }

    /// [`Table::lines`], coloured when `colour`: a bold header, styled cells (padding stays
    /// outside the colour codes, so columns still line up).
    pub(crate) fn lines_in(&self, colour: bool) -> Vec<String> {
        let width = |s: &str| s.chars().count();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| width(c))
                    .chain(std::iter::once(width(h)))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let render = |cells: Vec<&str>, header: bool| {
            let mut line = String::new();
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = cells.get(i).copied().unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = w.saturating_sub(width(cell));
                let style = if header {
                    None
                } else {
                    self.styles.get(i).copied().flatten().and_then(|f| f(cell))
                };
                let text = match style {
                    Some(st) => paint_if(colour, cell, st),
                    None => cell.to_owned(),
                };
                match align {
                    Align::Left => {
                        line.push_str(&text);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(&text);
                    }
                }
            }
            line.trim_end().to_owned()
        };
        let header = render(self.columns.iter().map(|(h, _)| h.as_str()).collect(), true);
        std::iter::once(paint_if(colour, &header, Style::Header))
            .chain(
                self.rows
                    .iter()
                    .map(|r| render(r.iter().map(String::as_str).collect(), false)),
            )
            .collect()
    }

    /// Print the table on stdout (coloured on a terminal).
    pub(crate) fn print(&self) {
        for line in self.lines_in(style::enabled()) {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(vec!["a-long-name".into(), "7".into(), "".into()]);
        t.row(vec!["b".into(), "1234".into(), "why".into()]);
        assert_eq!(
            t.lines(),
            [
                "NAME            N  NOTE",
                "a-long-name     7",
                "b            1234  why",
            ]
        );
    }

    #[test]
    fn colour_keeps_the_columns_aligned() {
        let mut t = Table::new(&[("STATUS", Align::Left), ("N", Align::Right)])
            .style_column(0, crate::style::of_status);
        t.row(vec!["completed".into(), "1".into()]);
        t.row(vec!["running".into(), "22".into()]);
        assert_eq!(
            t.lines_in(true),
            [
                "\x1b[1mSTATUS      N\x1b[0m",
                "\x1b[32mcompleted\x1b[0m   1",
                "running    22",
            ]
        );
        let plain: Vec<String> = t
            .lines_in(true)
            .iter()
            .map(|l| {
                l.replace("\x1b[1m", "")
                    .replace("\x1b[32m", "")
                    .replace("\x1b[0m", "")
            })
            .collect();
        assert_eq!(plain, t.lines(), "without the codes, the plain table");
    }
}
