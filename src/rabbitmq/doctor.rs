//! `remix doctor`'s checks of a rabbitmq target: the broker accepts the credentials and the
//! exchange can be declared (or exists as a durable topic exchange).

use super::config::RabbitmqTarget;
use crate::connector::{Report, Status};
use crate::error_chain;

pub(super) async fn check(target: &RabbitmqTarget, name: &str, report: &mut Report) {
    let subject = format!("target {name}");
    let connection = match lapin::Connection::connect(&target.url, lapin::ConnectionProperties::default())
        .await
    {
        Ok(connection) => connection,
        Err(e) => {
            let fix = Some(
                "start RabbitMQ or fix the url and credentials (the target retries until it answers)".into(),
            );
            return report.add(
                &subject,
                "reachable",
                Status::Fail,
                format!("cannot connect: {}", error_chain(&e)),
                fix,
            );
        }
    };
    report.ok(&subject, "reachable", "connected");
    let declared = async {
        let channel = connection.create_channel().await?;
        super::target::declare(&channel, &target.exchange).await
    };
    match declared.await {
        Ok(()) => report.ok(&subject, "exchange", format!("{} is a durable topic exchange", target.exchange)),
        Err(e) => report.add(
            &subject,
            "exchange",
            Status::Fail,
            format!("cannot declare {}: {}", target.exchange, error_chain(&e)),
            Some("use another exchange name, or let Remix declare it (durable, topic)".into()),
        ),
    }
    let _ = connection.close(0, "doctor done".into()).await;
}
