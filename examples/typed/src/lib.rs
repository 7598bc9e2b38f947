//! Exports over every kind of WIT value; the node's tests call each through
//! `POST /call/typed/FUNC` and check the JSON that comes back.

wit_bindgen::generate!({
    path: "wit",
    world: "example:typed/typed",
    generate_all,
});

use exports::example::typed::shapes::{self, Access, Color, Label, Point, Shape};

struct Typed;

impl Guest for Typed {
    fn add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }

    fn greet(name: Option<String>) -> String {
        format!("hello, {}", name.as_deref().unwrap_or("stranger"))
    }

    fn stats(values: Vec<f64>) -> (f64, f64, u32) {
        let sum: f64 = values.iter().sum();
        let mean = if values.is_empty() {
            0.0
        } else {
            sum / values.len() as f64
        };
        (sum, mean, values.len() as u32)
    }

    fn find(words: Vec<String>, needle: String) -> Option<u32> {
        words.iter().position(|w| *w == needle).map(|i| i as u32)
    }

    fn divide(a: i64, b: i64) -> Result<i64, String> {
        a.checked_div(b)
            .ok_or_else(|| format!("cannot divide {a} by {b}"))
    }

    fn initial(word: String) -> Option<char> {
        word.chars().next()
    }

    fn negate(b: bool) -> bool {
        !b
    }

    fn widest() -> u64 {
        u64::MAX
    }

    fn bytes(text: String) -> Vec<u8> {
        text.into_bytes()
    }

    fn nothing() {}
}

impl shapes::Guest for Typed {
    fn area(shape: Shape) -> f64 {
        match shape {
            Shape::Circle(r) => std::f64::consts::PI * r * r,
            Shape::Rect(p) => (p.x * p.y).abs(),
            Shape::Empty => 0.0,
        }
    }

    fn mirror(p: Point) -> Point {
        Point { x: p.y, y: p.x }
    }

    fn parse(text: String) -> Result<Shape, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let number = |s: &str| s.parse::<f64>().map_err(|e| format!("{s:?}: {e}"));
        match words.as_slice() {
            ["circle", r] => Ok(Shape::Circle(number(r)?)),
            ["rect", x, y] => Ok(Shape::Rect(Point {
                x: number(x)?,
                y: number(y)?,
            })),
            ["empty"] => Ok(Shape::Empty),
            _ => Err(format!("not a shape: {text:?}")),
        }
    }

    fn complement(color: Color) -> Color {
        match color {
            Color::Red => Color::Green,
            Color::Green => Color::Blue,
            Color::Blue => Color::Red,
        }
    }

    fn grant(have: Access, add: Access) -> Access {
        have | add
    }

    fn describe(label: Label) -> String {
        let at = match label.at {
            Some(p) => format!(" at ({}, {})", p.x, p.y),
            None => String::new(),
        };
        let color = match label.color {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
        };
        format!("{color} {:?}{at}", label.text)
    }
}

export!(Typed);
