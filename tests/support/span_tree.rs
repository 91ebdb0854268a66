//! A `tracing` layer that keeps the layer's spans and events as a tree and renders it, fields
//! as recorded by the end, for tests that assert what a request's trace looks like.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Debug, Default)]
struct Node {
    name: String,
    /// The span's fields in the order it declares them, whenever each was recorded.
    declared: Vec<&'static str>,
    fields: Vec<(String, String)>,
    children: Vec<Child>,
}

#[derive(Debug)]
enum Child {
    Span(usize),
    Event {
        level: tracing::Level,
        message: String,
        fields: Vec<(String, String)>,
    },
}

/// Where a span's node sits, kept in the span's extensions.
struct Ix(usize);

/// Collects the spans and events of `target` (and events inside its spans).
#[derive(Clone, Default)]
pub struct SpanTree {
    nodes: Arc<Mutex<Vec<Node>>>,
    roots: Arc<Mutex<Vec<usize>>>,
}

impl SpanTree {
    /// The trees, one line per span or event, fields below their span.
    pub fn render(&self) -> String {
        let nodes = self.nodes.lock().unwrap();
        let mut out = String::new();
        for &root in self.roots.lock().unwrap().iter() {
            render(&nodes, root, "", &mut out);
        }
        out
    }
}

fn render(nodes: &[Node], ix: usize, prefix: &str, out: &mut String) {
    let node = &nodes[ix];
    writeln!(out, "{}", node.name).unwrap();
    let more = if node.children.is_empty() {
        "  "
    } else {
        "│ "
    };
    let mut fields: Vec<&(String, String)> = node.fields.iter().collect();
    fields.sort_by_key(|(name, _)| node.declared.iter().position(|d| d == name));
    for (name, value) in fields {
        writeln!(out, "{prefix}{more}  {name}={value}").unwrap();
    }
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == node.children.len();
        let (branch, next) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        match child {
            Child::Span(c) => {
                write!(out, "{prefix}{branch}").unwrap();
                render(nodes, *c, &format!("{prefix}{next}"), out);
            }
            Child::Event {
                level,
                message,
                fields,
            } => {
                let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let sep = if fields.is_empty() { "" } else { " " };
                writeln!(
                    out,
                    "{prefix}{branch}{level} {message}{sep}{}",
                    fields.join(" ")
                )
                .unwrap();
            }
        }
    }
}

/// Field values as the fmt subscriber writes them: strings quoted, the rest bare.
struct Fields(Vec<(String, String)>, Option<String>);

impl Fields {
    fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), format!("{value:?}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), format!("{value:?}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.1 = Some(format!("{value:?}"));
        } else {
            self.set(field.name(), format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for SpanTree
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a new span is registered");
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Ix>().map(|ix| ix.0));
        if parent.is_none() && attrs.metadata().target() != "tower_midstream" {
            return;
        }
        let mut fields = Fields(Vec::new(), None);
        attrs.record(&mut fields);
        let mut nodes = self.nodes.lock().unwrap();
        let ix = nodes.len();
        nodes.push(Node {
            name: attrs.metadata().name().to_owned(),
            declared: attrs.metadata().fields().iter().map(|f| f.name()).collect(),
            fields: fields.0,
            children: Vec::new(),
        });
        match parent {
            Some(p) => nodes[p].children.push(Child::Span(ix)),
            None => self.roots.lock().unwrap().push(ix),
        }
        span.extensions_mut().insert(Ix(ix));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(ix) = span.extensions().get::<Ix>().map(|ix| ix.0) else {
            return;
        };
        let mut nodes = self.nodes.lock().unwrap();
        let mut fields = Fields(std::mem::take(&mut nodes[ix].fields), None);
        values.record(&mut fields);
        nodes[ix].fields = fields.0;
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let Some(ix) = span.extensions().get::<Ix>().map(|ix| ix.0) else {
            return;
        };
        let mut fields = Fields(Vec::new(), None);
        event.record(&mut fields);
        self.nodes.lock().unwrap()[ix].children.push(Child::Event {
            level: *event.metadata().level(),
            message: fields.1.unwrap_or_default(),
            fields: fields.0,
        });
    }
}
