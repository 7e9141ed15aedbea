# The AWS Node Termination Handler in queue mode (aws/aws-node-termination-handler v1.25.6):
# EventBridge sends spot interruption warnings, rebalance recommendations, instance state changes,
# AWS Health scheduled changes (on-demand nodes too) and ASG termination lifecycle actions to one SQS
# queue; NTH reads it, taints the node (taintNode) and cordons it without draining (cordonOnly), so
# orch checkpoints first and drains itself (orchestrator/cluster/k8s_notices.py).
resource "aws_sqs_queue" "nth" {
  name                      = "${var.cluster_name}-nth"
  message_retention_seconds = 300
  sqs_managed_sse_enabled   = true
}

data "aws_iam_policy_document" "nth_queue" {
  statement {
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.nth.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com", "sqs.amazonaws.com"]
    }
  }
}

resource "aws_sqs_queue_policy" "nth" {
  queue_url = aws_sqs_queue.nth.id
  policy    = data.aws_iam_policy_document.nth_queue.json
}

locals {
  nth_events = {
    spot-interruption = { source = ["aws.ec2"], detail-type = ["EC2 Spot Instance Interruption Warning"] }
    rebalance         = { source = ["aws.ec2"], detail-type = ["EC2 Instance Rebalance Recommendation"] }
    state-change      = { source = ["aws.ec2"], detail-type = ["EC2 Instance State-change Notification"] }
    scheduled-change  = { source = ["aws.health"], detail-type = ["AWS Health Event"], detail = { service = ["EC2"], eventTypeCategory = ["scheduledChange"] } }
    asg-lifecycle     = { source = ["aws.autoscaling"], detail-type = ["EC2 Instance-terminate Lifecycle Action"] }
  }
}

resource "aws_cloudwatch_event_rule" "nth" {
  for_each      = local.nth_events
  name          = "${var.cluster_name}-nth-${each.key}"
  event_pattern = jsonencode(each.value)
}

resource "aws_cloudwatch_event_target" "nth" {
  for_each = local.nth_events
  rule     = aws_cloudwatch_event_rule.nth[each.key].name
  arn      = aws_sqs_queue.nth.arn
}

data "aws_iam_policy_document" "nth" {
  statement {
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage"]
    resources = [aws_sqs_queue.nth.arn]
  }
  statement {
    actions = ["autoscaling:CompleteLifecycleAction", "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeTags", "ec2:DescribeInstances"]
    resources = ["*"] # these describe/complete calls do not support resource-level permissions
  }
}

resource "aws_iam_policy" "nth" {
  name   = "${var.cluster_name}-nth"
  policy = data.aws_iam_policy_document.nth.json
}

module "nth_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.44"

  role_name        = "${var.cluster_name}-nth"
  role_policy_arns = { nth = aws_iam_policy.nth.arn }
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:aws-node-termination-handler"]
    }
  }
}

resource "helm_release" "node_termination_handler" {
  name       = "aws-node-termination-handler"
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-node-termination-handler"
  version    = var.node_termination_handler_version
  namespace  = "kube-system"

  values = [yamlencode({
    enableSqsTerminationDraining = true # queue mode
    queueURL                     = aws_sqs_queue.nth.url
    cordonOnly                   = true # orch checkpoints, then drains
    taintNode                    = true # the taints orch watches (orchestrator/cluster/notice_windows.yaml)
    emitKubernetesEvents         = true
    checkTagBeforeDraining       = false # every node of this cluster is orch's
    serviceAccount               = { annotations = { "eks.amazonaws.com/role-arn" = module.nth_irsa.iam_role_arn } }
    nodeSelector                 = { "orch.dev/pool-kind" = "system" }
  })]
}
