//! `trivial`: the least an actix-web publish endpoint can do, the yardstick
//! of S6's single-event publishes. `POST /v1/topics/{t}/events` reads the
//! body, checks it is UTF-8 and answers `201` with a tiny JSON body and an
//! `Event-Cursor` header, like Sluice's; nothing is stored.

use actix_web::{web, App, HttpResponse, HttpServer};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// HTTP worker threads; 0 = one per CPU core (as Sluice's default).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

async fn publish(topic: web::Path<String>, body: web::Bytes) -> HttpResponse {
    if std::str::from_utf8(&body).is_err() {
        return HttpResponse::BadRequest().finish();
    }
    let cursor = format!("{:016x}", SEQ.fetch_add(1, Relaxed) + 1);
    HttpResponse::Created()
        .insert_header(("event-cursor", cursor.as_str()))
        .content_type("application/json")
        .body(format!(
            r#"{{"topic":"{topic}","cursor":"{cursor}","duplicate":false}}"#
        ))
}

pub fn run(args: Args) -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(|| {
            App::new()
                .app_data(web::PayloadConfig::new(1 << 20))
                .route("/v1/topics/{topic}/events", web::post().to(publish))
        })
        .bind(&args.listen)?;
        if args.workers > 0 {
            server = server.workers(args.workers);
        }
        for addr in server.addrs() {
            println!("trivial listening on {addr}");
        }
        server.run().await
    })
}
