//! Plain-text tables as `whale list` and `whale ps` print them: a header row, columns
//! left-aligned and separated by spaces, no borders — easy to read and to `awk`.

/// Spaces between two columns.
const GAP: usize = 4;

/// Renders `header` and `rows` as aligned columns, one line each, every line ending in `\n`.
/// The last column is not padded, so lines carry no trailing spaces.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(ToString::to_string).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (index, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if index < last {
                let pad = widths[index] - cell.chars().count() + GAP;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_without_trailing_spaces() {
        let rows = vec![
            vec![
                "deepseek-r1:1.5b".into(),
                "a42b25d8c10a".into(),
                "1.1 GB".into(),
                "2 hours ago".into(),
            ],
            vec![
                "x:latest".into(),
                "0123456789ab".into(),
                "512 B".into(),
                "About a minute ago".into(),
            ],
        ];
        let text = render(&["NAME", "ID", "SIZE", "MODIFIED"], &rows);
        let want = "\
NAME                ID              SIZE      MODIFIED
deepseek-r1:1.5b    a42b25d8c10a    1.1 GB    2 hours ago
x:latest            0123456789ab    512 B     About a minute ago
";
        assert_eq!(text, want);
    }

    #[test]
    fn header_alone_when_empty() {
        assert_eq!(render(&["NAME", "ID"], &[]), "NAME    ID\n");
    }
}
