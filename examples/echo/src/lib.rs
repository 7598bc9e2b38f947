//! A handler that returns its input unchanged.

wit_bindgen::generate!({
    path: "../../wit/handler",
    world: "wasmatic:handler/handler",
    generate_all,
});

struct Echo;

impl Guest for Echo {
    fn handler(input: String) -> String {
        input
    }
}

export!(Echo);
