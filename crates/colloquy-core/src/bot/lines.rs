//! Maps YAML paths (`flows.order.steps[2].ask`) to the line they start on,
//! so that errors found after deserialization still name a line.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser};

#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl LineIndex {
    /// Index a YAML document. Syntax errors yield an empty index: serde
    /// reports those itself, with their own line.
    pub fn new(source: &str) -> Self {
        let mut index = LineIndex::default();
        let mut parser = Parser::new_from_str(source);
        let mut stack: Vec<Frame> = Vec::new();
        while let Ok((event, mark)) = parser.next_token() {
            let line = mark.line();
            // Path of the node this event opens (when it is a value).
            let value_path = match stack.last_mut() {
                None => Some(String::new()),
                Some(Frame::Map { path, key }) => match key.take() {
                    Some(k) => Some(join(path, &k)),
                    None => {
                        // This event is a key.
                        if let Event::Scalar(k, ..) = &event {
                            let p = join(path, k);
                            index.lines.entry(p).or_insert(line);
                            *key = Some(k.clone());
                        }
                        None
                    }
                },
                Some(Frame::Seq { path, index: i }) => {
                    let p = format!("{path}[{i}]");
                    *i += 1;
                    Some(p)
                }
            };
            match event {
                Event::StreamEnd => break,
                Event::MappingStart(..) => {
                    let path = value_path.unwrap_or_default();
                    index.lines.entry(path.clone()).or_insert(line);
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = value_path.unwrap_or_default();
                    index.lines.entry(path.clone()).or_insert(line);
                    stack.push(Frame::Seq { path, index: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Scalar(..) | Event::Alias(..) => {
                    if let Some(p) = value_path {
                        index.lines.entry(p).or_insert(line);
                    }
                }
                _ => {}
            }
        }
        index
    }

    /// Line of `path`, or of its nearest indexed ancestor.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_of_nested_keys_and_sequence_items() {
        let src = "bot:\n  name: x\nflows:\n  a:\n    steps:\n      - say: hi\n      - ask: size\n        prompt: p\n";
        let ix = LineIndex::new(src);
        assert_eq!(ix.line("bot.name"), Some(2));
        assert_eq!(ix.line("flows.a.steps[0].say"), Some(6));
        assert_eq!(ix.line("flows.a.steps[1]"), Some(7));
        assert_eq!(ix.line("flows.a.steps[1].prompt"), Some(8));
        // Unknown leaf falls back to its parent.
        assert_eq!(ix.line("flows.a.steps[1].nothing"), Some(7));
    }
}
